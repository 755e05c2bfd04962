defmodule Tether.TestCluster.Manager do
  @moduledoc """
  Starts several BEAM nodes as OS processes, waits until they join the cluster, watches them,
  restarts the ones that crash, and stops them all without leaving anything behind — on this
  machine, or spread over several hosts.

      {:ok, nodes} = Tether.TestCluster.Manager.start_cluster(node_count: 2)
      # both nodes are in Node.list() and answer HTTP on their ports
      :ok = Tether.TestCluster.Manager.stop_cluster()
      # every node's OS process and process group are gone

  The manager is a `GenServer`; `start_cluster/1` starts one (registered under this module's
  name, supervised by `Tether.TestCluster.Supervisor`) when none is running. It owns the nodes'
  OS processes: if it dies, Tether stops them. It never waits in a callback: nodes are started
  by their keepers, checked and stopped by tasks, and a node's join reaches it as a `nodeup`
  (`:net_kernel.monitor_nodes/1`): every node connects to it as it boots, through the
  `TETHER_CLUSTER_MANAGER` variable of its environment (`Tether.TestCluster.NodeSpec`).

  ## Several hosts

  With `hosts: [agent, …]` the nodes run on agents (`Tether.TestCluster.Agent`, started on
  each host with `mix tether.agent`): each node's OS process is started on its agent with
  `Tether.run(cmd, node: agent)`, so the agent's Tether owns it and stops it when the manager,
  or the manager's connection, goes away. Node names take the agent's host part and HTTP ports
  are allocated per host (`Tether.TestCluster.Placement`). Output, health checks, crash
  detection, restarts (on the same host) and stopping work as on one machine. An agent that
  goes down or is cut off reports each of its nodes as `{:node_crashed, name, {:nodedown,
  agent}}`, then `{:node_failed, name}` (or, with `on_host_down: :move`, restarts them on the
  other hosts); the agent stops those nodes itself, so an agent that comes back brings no stale
  node back.

      {:ok, nodes} = TestCluster.Manager.start_cluster(hosts: [:"a1@10.0.0.2", :"a2@10.0.0.3"],
                                                       node_count: 4)

  This VM must have a name the agents can reach (start it with `--name`, or give `:hostname`).

  ## Options of `start_cluster/1`

    * `:node_count` - number of nodes. Defaults to `2` (with per-host counts, their sum).
    * `:hosts` - the agents to run the nodes on: a list of node names, or `[{agent, count}]`
      for a number of nodes per agent. Defaults to `nil`: every node on this machine.
    * `:placement` - with a list of `:hosts`: `:round_robin` (the default) or a function
      `fn index, hosts -> host end`.
    * `:on_host_down` - `:fail` (the default): a node whose agent went down is given up;
      `:move`: it is restarted on the live host with the fewest nodes.
    * `:base_http_port` - the `k`-th node on a host serves HTTP on `base_http_port + k`.
      Defaults to `4100`.
    * `:cookie` - the cluster cookie (an atom), also the agents'. Defaults to `:tether_cluster`.
    * `:hostname` - the host part of this VM's name, and on one machine of the nodes' names.
      Defaults to `"127.0.0.1"`.
    * `:name_prefix` - node `i` is named `:"<prefix><i>@<hostname>"`. Defaults to `"tether_n"`.
    * `:boot` - what each node runs: `:elixir` (default), `{:mix_run, project_dir}` or
      `{:command, fun}`; see `Tether.TestCluster.NodeSpec`. With `:hosts`, `project_dir` is a
      path on every host.
    * `:boot_timeout` - milliseconds a node has to join (and, for `:elixir`, to answer HTTP).
      Defaults to `30_000`.
    * `:mix_env` - the `MIX_ENV` nodes get. Defaults to `"dev"`.
    * `:env` - extra environment for every node, `[{"NAME", "value"}]`.
    * `:kill_timeout` - seconds between SIGTERM and SIGKILL when a node is stopped. Defaults to `5`.
    * `:stop_timeout` - milliseconds a host has, in `stop_cluster/1`, to confirm that its
      nodes' process groups are gone. Defaults to `15_000`.
    * `:max_restarts` - restarts per node before it is given up. Defaults to `3`.
    * `:restart_backoff` - milliseconds before the first restart, doubled for each further one.
      Defaults to `500`.
    * `:health_interval` - milliseconds between health checks. Defaults to `2000`.
    * `:subscriber` - the pid that gets crash notices. Defaults to the caller.

  ## Messages to subscribers

    * `{:node_crashed, name, reason}` - a node's OS process ended without being asked to;
      `reason` as in Tether's `:DOWN` (`{:signal, :sigkill, false}`, `{:exit_status, 1}`,
      `{:nodedown, agent}` when its agent was lost, …).
    * `{:node_moved, name, new_name}` - with `on_host_down: :move`, a node is restarted on a
      host with another hostname, hence under another name (then `{:node_restarted, new_name,
      info}`).
    * `{:node_restarted, name, info}` - a crashed node was started again and rejoined.
    * `{:node_failed, name}` - a node crashed after `:max_restarts` restarts, its restart did
      not boot, or its agent was lost; it is not restarted again.

  ## Node info

  `nodes` (from `start_cluster/1` and `nodes/0`) is a list of `{name, info}`, in node order,
  where `info` is a map with `:name`, `:host` (the node whose Tether runs it: an agent, or this
  node), `:hostname`, `:http_port`, `:url`, `:os_pid` (on its host), `:exec_pid` (the
  `Tether.Process`, on its host), `:status` (`:booting`, `:running`, `:restarting`,
  `:stopping`, `:failed`) and `:restart_count`.
  """

  use GenServer

  alias Tether.TestCluster.{Cluster, Config, HealthCheck, Hosts, Lifecycle, OutputBuffer}
  alias Tether.TestCluster.Stopping
  alias Tether.TestCluster.Node, as: ClusterNode

  @type name :: node
  @type status :: :booting | :running | :restarting | :stopping | :failed
  @type info :: %{
          name: name,
          host: node,
          http_port: :inet.port_number(),
          url: String.t(),
          hostname: String.t(),
          os_pid: Tether.os_pid() | nil,
          exec_pid: pid | nil,
          status: status,
          restart_count: non_neg_integer
        }

  @typedoc "A node's last health check (`status/2`), `nil` before the first."
  @type health :: %{
          os: :running | :stopping | :stopped | :no_process | :unknown | term,
          ping: :pong | :pang,
          http: :ok | :not_checked | {:error, term}
        }

  @typedoc "`info` and its `:health`."
  @type node_status :: %{
          name: name,
          host: node,
          http_port: :inet.port_number(),
          url: String.t(),
          hostname: String.t(),
          os_pid: Tether.os_pid() | nil,
          exec_pid: pid | nil,
          status: status,
          restart_count: non_neg_integer,
          health: health | nil
        }

  @typedoc "The options of `start_cluster/1` (see the module doc), and `:manager`."
  @type option ::
          {:node_count, pos_integer}
          | {:hosts, [node] | [{node, pos_integer}] | nil}
          | {:placement, :round_robin | (pos_integer, [node] -> node)}
          | {:on_host_down, :fail | :move}
          | {:base_http_port, pos_integer}
          | {:cookie, atom}
          | {:hostname, String.t()}
          | {:name_prefix, String.t()}
          | {:boot, Tether.TestCluster.NodeSpec.boot()}
          | {:boot_timeout, pos_integer}
          | {:mix_env, String.t()}
          | {:env, [{String.t(), String.t()}]}
          | {:kill_timeout, number}
          | {:stop_timeout, pos_integer}
          | {:max_restarts, non_neg_integer}
          | {:restart_backoff, non_neg_integer}
          | {:health_interval, pos_integer}
          | {:subscriber, pid}
          | {:manager, atom}

  # ── API ──────────────────────────────────────────────────────────────────────────────────

  @doc "Starts a manager (normally `start_cluster/1` does it for you)."
  @spec start_link([{:name, GenServer.name()}]) :: GenServer.on_start()
  def start_link(options \\ []) do
    GenServer.start_link(__MODULE__, :ok, name: Keyword.get(options, :name, __MODULE__))
  end

  @doc """
  Starts the cluster and returns once every node has joined, or fails as a whole: on any
  failure every node already started is stopped and `{:error, reason}` is returned, with
  `{:node_connection_failed, name}` for a node that did not join in time,
  `{:host_unreachable, agent}` for an agent that cannot be connected and
  `{:tether_not_running, agent}` for one that does not run Tether.
  """
  @spec start_cluster([option]) :: {:ok, [{name, info}]} | {:error, term}
  def start_cluster(options \\ []) do
    {manager, options} = Keyword.pop(options, :manager, __MODULE__)
    config = Config.validate!(options)
    # The HTTP client of the health checks; only a cluster needs it, so Tether does not.
    {:ok, _} = Application.ensure_all_started(:inets)

    with :ok <- Hosts.ensure_distributed(config.hostname),
         {:ok, config} <- Hosts.connect(config) do
      GenServer.call(ensure_started(manager), {:start_cluster, Config.plan(config)}, :infinity)
    end
  end

  @doc """
  Stops every node; returns `:ok` once every OS process and process group is gone on every
  host, or `{:error, {:hosts_not_answering, agents}}` when some hosts could not confirm it
  within `:stop_timeout` (their nodes stay listed as `:stopping` until they are gone).
  """
  @spec stop_cluster(GenServer.server()) :: :ok | {:error, {:hosts_not_answering, [node]}}
  def stop_cluster(manager \\ __MODULE__) do
    if alive?(manager), do: GenServer.call(manager, :stop_cluster, :infinity), else: :ok
  end

  @doc "Stops one node, like `stop_cluster/1`."
  @spec stop_node(name, GenServer.server()) ::
          :ok | {:error, :unknown_node | {:hosts_not_answering, [node]}}
  def stop_node(name, manager \\ __MODULE__) do
    GenServer.call(manager, {:stop_node, name}, :infinity)
  end

  @doc "The nodes and their info (`:host` says where each runs), in node order."
  @spec nodes(GenServer.server()) :: [{name, info}]
  def nodes(manager \\ __MODULE__), do: GenServer.call(manager, :nodes)

  @doc """
  A node's info plus its last health check: `:os` (`Tether.status/1`), `:ping` (`:pong` or
  `:pang`) and `:http` (`:ok` or `{:error, reason}`), or `nil` before the first check.
  """
  @spec status(name, GenServer.server()) :: {:ok, node_status} | {:error, :unknown_node}
  def status(name, manager \\ __MODULE__), do: GenServer.call(manager, {:status, name})

  @doc "The last 1,000 (at most) output lines of a node, oldest first, as `{stream, line}`."
  @spec output(name, GenServer.server()) ::
          [{:stdout | :stderr, binary}] | {:error, :unknown_node}
  def output(name, manager \\ __MODULE__), do: GenServer.call(manager, {:output, name})

  @doc """
  Runs `command` on cluster node `name` with `Tether.run/2` (`node: name`): output and the
  `:DOWN` reach the caller here; the OS process is stopped if the caller dies.
  """
  @spec run_on(name, Tether.command(), Tether.options()) ::
          {:ok, pid, Tether.os_pid()} | {:error, term}
  def run_on(name, command, options \\ []) when is_atom(name) and is_list(options) do
    Tether.run(command, options ++ [node: name])
  end

  @doc "Adds `pid` to the processes that get crash notices."
  @spec subscribe(pid, GenServer.server()) :: :ok
  def subscribe(pid \\ self(), manager \\ __MODULE__) do
    GenServer.call(ensure_started(manager), {:subscribe, pid})
  end

  @doc "Checks the health of every running node now and returns `status/1` of each."
  @spec check_health(GenServer.server()) :: [{name, node_status}]
  def check_health(manager \\ __MODULE__), do: GenServer.call(manager, :check_health, 30_000)

  @doc false
  # For the tests and the demo: live pids in the process groups `pgids`, on this host.
  @spec group_members(pos_integer | [pos_integer]) :: [pos_integer]
  defdelegate group_members(pgids), to: Tether.ProcFs

  defp alive?(manager) when is_atom(manager), do: Process.whereis(manager) != nil
  defp alive?(manager), do: GenServer.whereis(manager) != nil

  defp ensure_started(manager) when is_atom(manager) do
    case Process.whereis(manager) do
      nil ->
        spec = %{id: manager, start: {__MODULE__, :start_link, [[name: manager]]}}

        Tether.TestCluster.Supervisor.start_child(
          Supervisor.child_spec(spec, restart: :temporary)
        )

      pid ->
        pid
    end
  end

  defp ensure_started(manager), do: manager

  # ── Server ───────────────────────────────────────────────────────────────────────────────

  @impl true
  def init(:ok), do: {:ok, %Cluster{}, {:continue, :monitor_nodes}}

  @impl true
  def handle_continue(:monitor_nodes, state) do
    # Joins and losses of (visible) nodes, as `{:nodeup, node}` and `{:nodedown, node}`.
    :ok = :net_kernel.monitor_nodes(true)
    {:noreply, state}
  end

  @impl true
  def handle_call({:start_cluster, _config}, _from, %{order: [_ | _]} = state) do
    {:reply, {:error, :already_started}, state}
  end

  def handle_call({:start_cluster, config}, from, state) do
    {:noreply, Lifecycle.start(state, config, from)}
  end

  def handle_call(:stop_cluster, from, state) do
    {:noreply, Stopping.stop_nodes(state, state.order, from)}
  end

  def handle_call({:stop_node, name}, from, state) do
    if Map.has_key?(state.nodes, name) do
      {:noreply, Stopping.stop_nodes(state, [name], from)}
    else
      {:reply, {:error, :unknown_node}, state}
    end
  end

  def handle_call(:nodes, _from, state), do: {:reply, Cluster.node_list(state), state}

  def handle_call({:status, name}, _from, state) do
    case state.nodes do
      %{^name => node} -> {:reply, {:ok, ClusterNode.status_info(node)}, state}
      _ -> {:reply, {:error, :unknown_node}, state}
    end
  end

  def handle_call({:output, name}, _from, state) do
    case state.nodes do
      %{^name => node} -> {:reply, OutputBuffer.lines(node.buffer), state}
      _ -> {:reply, {:error, :unknown_node}, state}
    end
  end

  def handle_call({:subscribe, pid}, _from, state) do
    {:reply, :ok, %{state | subscribers: MapSet.put(state.subscribers, pid)}}
  end

  def handle_call(:check_health, from, state) do
    state = HealthCheck.start(state)
    {:noreply, %{state | health_waiters: [from | state.health_waiters]}}
  end

  @impl true
  def handle_info({:node_output, name, stream, data}, state) do
    case state.nodes do
      %{^name => _} ->
        {:noreply, Cluster.update_node(state, name, &ClusterNode.output(&1, stream, data))}

      _ ->
        {:noreply, state}
    end
  end

  # Local children and remote ones (whose pid is on their agent) alike; os_pids are only
  # unique per host.
  def handle_info({:DOWN, os_pid, :process, pid, reason}, state) when is_integer(os_pid) do
    case Map.pop(state.by_os_pid, {node(pid), os_pid}) do
      {nil, _} ->
        {:noreply, state}

      {name, by_os_pid} ->
        {:noreply, Lifecycle.node_down(%{state | by_os_pid: by_os_pid}, name, reason)}
    end
  end

  def handle_info({:launched, ref, result}, state) do
    {:noreply, Lifecycle.launched(state, ref, result)}
  end

  def handle_info({:nodeup, name}, state), do: {:noreply, Lifecycle.nodeup(state, name)}
  def handle_info({:nodedown, name}, state), do: {:noreply, Lifecycle.nodedown(state, name)}

  def handle_info({:boot_timeout, name, os_pid}, state) do
    {:noreply, Lifecycle.boot_timeout(state, name, os_pid)}
  end

  def handle_info({:restart, name}, state), do: {:noreply, Lifecycle.restart(state, name)}

  def handle_info(:health_tick, state) do
    HealthCheck.schedule(state)
    {:noreply, HealthCheck.start(state)}
  end

  # A task's reply (`Cluster.start_task/3`), for what it was started for.
  def handle_info({ref, result}, %{tasks: tasks} = state) when is_map_key(tasks, ref) do
    Process.demonitor(ref, [:flush])
    {purpose, tasks} = Map.pop(tasks, ref)
    {:noreply, task_done(%{state | tasks: tasks}, ref, purpose, result)}
  end

  def handle_info({:DOWN, ref, :process, _, reason}, %{tasks: tasks} = state)
      when is_map_key(tasks, ref) do
    # A task that crashed takes the manager with it (it is linked): only a kill gets here.
    {purpose, tasks} = Map.pop(tasks, ref)
    {:noreply, task_done(%{state | tasks: tasks}, ref, purpose, {:exit, reason})}
  end

  def handle_info(_other, state), do: {:noreply, state}

  defp task_done(state, _ref, {:boot_check, name, os_pid}, result) do
    Lifecycle.boot_checked(state, name, os_pid, result)
  end

  defp task_done(state, _ref, :health, {:exit, _}), do: state
  defp task_done(state, _ref, :health, results), do: HealthCheck.done(state, results)
  defp task_done(state, ref, :stop, {:exit, _}), do: Stopping.task_done(state, ref, [])
  defp task_done(state, ref, :stop, unanswered), do: Stopping.task_done(state, ref, unanswered)
end
