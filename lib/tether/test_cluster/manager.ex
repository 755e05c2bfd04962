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
  name, supervised by Tether) when none is running. It owns the nodes' OS processes: if it dies,
  Tether stops them.

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
  require Logger

  alias Tether.TestCluster.{Health, NodeSpec, OutputBuffer, Placement}

  @type name :: node
  @type info :: %{
          name: name,
          host: node,
          http_port: :inet.port_number(),
          url: String.t(),
          hostname: String.t(),
          os_pid: Tether.os_pid() | nil,
          exec_pid: pid | nil,
          status: :booting | :running | :restarting | :stopping | :failed,
          restart_count: non_neg_integer
        }

  @defaults [
    node_count: 2,
    hosts: nil,
    placement: :round_robin,
    on_host_down: :fail,
    base_http_port: 4100,
    cookie: :tether_cluster,
    hostname: "127.0.0.1",
    name_prefix: "tether_n",
    boot: :elixir,
    boot_timeout: 30_000,
    mix_env: "dev",
    env: [],
    kill_timeout: 5,
    stop_timeout: 15_000,
    max_restarts: 3,
    restart_backoff: 500,
    health_interval: 2000
  ]

  # ── API ──────────────────────────────────────────────────────────────────────────────────

  @doc "Starts a manager (normally `start_cluster/1` does it for you)."
  @spec start_link(keyword) :: GenServer.on_start()
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
  @spec start_cluster(keyword) :: {:ok, [{name, info}]} | {:error, term}
  def start_cluster(options \\ []) do
    {manager, options} = Keyword.pop(options, :manager, __MODULE__)
    config = validate!(options)

    with :ok <- ensure_distributed(config.hostname),
         {:ok, config} <- connect_hosts(config) do
      GenServer.call(ensure_started(manager), {:start_cluster, plan(config)}, :infinity)
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
  @spec status(name, GenServer.server()) :: {:ok, map} | {:error, :unknown_node}
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
  @spec check_health(GenServer.server()) :: [{name, map}]
  def check_health(manager \\ __MODULE__), do: GenServer.call(manager, :check_health, 30_000)

  defp alive?(manager) when is_atom(manager), do: Process.whereis(manager) != nil
  defp alive?(manager), do: GenServer.whereis(manager) != nil

  defp ensure_started(manager) when is_atom(manager) do
    case Process.whereis(manager) do
      nil ->
        spec = %{
          id: manager,
          start: {__MODULE__, :start_link, [[name: manager]]},
          restart: :temporary
        }

        case Supervisor.start_child(Tether.Supervisor, spec) do
          {:ok, pid} -> pid
          {:error, {:already_started, pid}} -> pid
        end

      pid ->
        pid
    end
  end

  defp ensure_started(manager), do: manager

  defp validate!(options) do
    Enum.each(options, fn {key, _} ->
      Keyword.has_key?(@defaults, key) or key == :subscriber or
        raise ArgumentError, "unknown option #{inspect(key)} for start_cluster/1"
    end)

    config = Keyword.merge(@defaults, options)

    checks = [
      node_count: &(is_integer(&1) and &1 > 0),
      hosts: &valid_hosts?/1,
      placement: &(&1 == :round_robin or is_function(&1, 2)),
      on_host_down: &(&1 in [:fail, :move]),
      base_http_port: &(is_integer(&1) and &1 > 0 and &1 < 65_000),
      cookie: &(is_atom(&1) and &1 not in [nil, true, false]),
      hostname: &(is_binary(&1) and &1 != ""),
      name_prefix: &(is_binary(&1) and &1 =~ ~r/^[A-Za-z][A-Za-z0-9_]*$/),
      boot: &valid_boot?(&1, config[:hosts]),
      boot_timeout: &(is_integer(&1) and &1 > 0),
      mix_env: &is_binary/1,
      env: &is_list/1,
      kill_timeout: &(is_number(&1) and &1 >= 0),
      stop_timeout: &(is_integer(&1) and &1 > 0),
      max_restarts: &(is_integer(&1) and &1 >= 0),
      restart_backoff: &(is_integer(&1) and &1 >= 0),
      health_interval: &(is_integer(&1) and &1 > 0)
    ]

    for {key, valid?} <- checks, not valid?.(config[key]) do
      raise ArgumentError, "invalid value for #{inspect(key)} option: #{inspect(config[key])}"
    end

    subscriber = Keyword.get(options, :subscriber, self())
    is_pid(subscriber) or raise ArgumentError, "invalid value for :subscriber option"

    config
    |> Map.new()
    |> Map.put(:subscriber, subscriber)
    |> host_counts!(options)
  end

  defp valid_hosts?(nil), do: true

  defp valid_hosts?([_ | _] = hosts) do
    names =
      Enum.map(hosts, fn
        {host, _} -> host
        host -> host
      end)

    Enum.all?(hosts, fn
      {host, count} -> agent_name?(host) and is_integer(count) and count > 0
      host -> agent_name?(host)
    end) and
      (Enum.all?(hosts, &is_tuple/1) or not Enum.any?(hosts, &is_tuple/1)) and
      length(Enum.uniq(names)) == length(names)
  end

  defp valid_hosts?(_), do: false

  defp agent_name?(host), do: is_atom(host) and String.contains?(Atom.to_string(host), "@")

  # `hosts: [{agent, count}]` is a placement by counts; node_count is their sum.
  defp host_counts!(%{hosts: [{_, _} | _] = counts} = config, options) do
    total = counts |> Enum.map(&elem(&1, 1)) |> Enum.sum()

    if Keyword.has_key?(options, :node_count) and config.node_count != total do
      raise ArgumentError,
            "invalid value for :node_count option: #{config.node_count} " <>
              "(the :hosts counts add up to #{total})"
    end

    if Keyword.has_key?(options, :placement) do
      raise ArgumentError, "invalid value for :placement option: the :hosts have counts"
    end

    %{config | hosts: Enum.map(counts, &elem(&1, 0)), node_count: total}
    |> Map.put(:placement, {:counts, counts})
  end

  defp host_counts!(config, options) do
    if config.hosts == nil and Keyword.has_key?(options, :placement) do
      raise ArgumentError, "invalid value for :placement option: it needs :hosts"
    end

    config
  end

  defp valid_boot?(:elixir, _hosts), do: true
  defp valid_boot?({:mix_run, dir}, nil), do: is_binary(dir) and File.dir?(dir)
  # With hosts, the directory is checked on each of them.
  defp valid_boot?({:mix_run, dir}, _hosts), do: is_binary(dir)
  defp valid_boot?({:command, fun}, _hosts), do: is_function(fun, 1)
  defp valid_boot?(_, _hosts), do: false

  # In the caller, before the manager is asked: the node must be distributed before any node
  # or agent boots, and the hosts connected.
  defp ensure_distributed(hostname) do
    if Node.alive?() do
      :ok
    else
      # `epmd -daemon` forks and returns; epmd outlives us on purpose, like after `erl -name`.
      # It is started with a Port, never as a Tether child: a child's group (and soon its
      # cgroup) is killed when the child is stopped, and epmd must not go with it.
      if epmd = System.find_executable("epmd"), do: System.cmd(epmd, ["-daemon"])
      name = :"tether_manager_#{System.unique_integer([:positive])}@#{hostname}"

      case Node.start(name, :longnames) do
        {:ok, _} -> :ok
        {:error, reason} -> {:error, {:distribution_failed, reason}}
      end
    end
  end

  # Connects each agent (hidden, so that `global` never cuts the connection that owns its
  # nodes) and learns where Tether's code is there.
  defp connect_hosts(%{hosts: nil} = config), do: {:ok, Map.put(config, :tether_dirs, %{})}

  defp connect_hosts(config) do
    Enum.reduce_while(config.hosts, {:ok, Map.put(config, :tether_dirs, %{})}, fn host,
                                                                                  {:ok, config} ->
      case connect_host(host, config) do
        {:ok, dir} -> {:cont, {:ok, put_in(config, [:tether_dirs, host], dir)}}
        {:error, reason} -> {:halt, {:error, reason}}
      end
    end)
  end

  defp connect_host(host, config) when host == node(), do: {:ok, nil} |> check_dir(host, config)

  defp connect_host(host, config) do
    :erlang.set_cookie(host, config.cookie)

    with true <-
           :net_kernel.hidden_connect_node(host) == true || {:error, {:host_unreachable, host}},
         pid when is_pid(pid) <-
           :erpc.call(host, Process, :whereis, [Tether.Supervisor], 10_000) ||
             {:error, {:tether_not_running, host}} do
      {:ok, :erpc.call(host, :code, :lib_dir, [:tether], 10_000) |> List.to_string()}
      |> check_dir(host, config)
    end
  catch
    :error, {:erpc, _} -> {:error, {:host_unreachable, host}}
  end

  defp check_dir(result, host, %{boot: {:mix_run, dir}}) do
    exists? = if host == node(), do: File.dir?(dir), else: :erpc.call(host, File, :dir?, [dir])

    exists? or
      raise ArgumentError, "invalid value for :boot option: #{dir} is not a directory on #{host}"

    result
  end

  defp check_dir(result, _host, _config), do: result

  defp plan(config) do
    {hosts, hostname} =
      if config.hosts, do: {config.hosts, nil}, else: {[node()], config.hostname}

    slots =
      Placement.plan(
        config.node_count,
        hosts,
        config.placement,
        config.base_http_port,
        config.name_prefix,
        hostname
      )

    Map.put(config, :slots, slots)
  end

  # ── Server ───────────────────────────────────────────────────────────────────────────────

  @impl true
  def init(:ok) do
    {:ok,
     %{
       config: nil,
       nodes: %{},
       order: [],
       by_os_pid: %{},
       subscribers: MapSet.new(),
       starting: nil,
       stop_waiters: [],
       health_task: nil,
       health_waiters: [],
       health_timer: false
     }}
  end

  @impl true
  def handle_call({:start_cluster, _config}, _from, %{order: [_ | _]} = state) do
    {:reply, {:error, :already_started}, state}
  end

  def handle_call({:start_cluster, config}, from, state) do
    state = %{
      state
      | config: config,
        subscribers: MapSet.put(state.subscribers, config.subscriber)
    }

    {:noreply, launch_all(%{state | starting: from})}
  end

  def handle_call(:stop_cluster, from, state) do
    {:noreply, stop_nodes(state, state.order, from)}
  end

  def handle_call({:stop_node, name}, from, state) do
    if Map.has_key?(state.nodes, name) do
      {:noreply, stop_nodes(state, [name], from)}
    else
      {:reply, {:error, :unknown_node}, state}
    end
  end

  def handle_call(:nodes, _from, state), do: {:reply, node_list(state), state}

  def handle_call({:status, name}, _from, state) do
    case state.nodes do
      %{^name => node} -> {:reply, {:ok, Map.put(info(node), :health, node.health)}, state}
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
    state = start_health_check(state)
    {:noreply, %{state | health_waiters: [from | state.health_waiters]}}
  end

  @impl true
  def handle_info({:node_output, name, stream, data}, state) do
    case state.nodes do
      %{^name => _} ->
        {:noreply,
         update_node(state, name, &%{&1 | buffer: OutputBuffer.add(&1.buffer, stream, data)})}

      _ ->
        {:noreply, state}
    end
  end

  # Local children and remote ones (whose pid is on their agent) alike; os_pids are only
  # unique per host.
  def handle_info({:DOWN, os_pid, :process, pid, reason}, state) when is_integer(os_pid) do
    case Map.pop(state.by_os_pid, {node(pid), os_pid}) do
      {nil, _} -> {:noreply, state}
      {name, by_os_pid} -> {:noreply, node_down(%{state | by_os_pid: by_os_pid}, name, reason)}
    end
  end

  def handle_info({:launched, ref, result}, state) do
    case Enum.find(state.nodes, fn {_, node} -> node.launching == ref end) do
      {name, _} ->
        {:noreply, launched(state, name, result)}

      nil ->
        # Its node is gone: what was started there goes with its owner, the keeper.
        {:noreply, state}
    end
  end

  def handle_info({:booted, name, os_pid, result}, state) do
    case state.nodes do
      %{^name => %{os_pid: ^os_pid, status: :booting}} -> {:noreply, booted(state, name, result)}
      _ -> {:noreply, state}
    end
  end

  def handle_info({:restart, name}, state) do
    case state.nodes do
      %{^name => %{status: :restarting}} -> {:noreply, restart(state, name)}
      _ -> {:noreply, state}
    end
  end

  def handle_info(:health_tick, state) do
    schedule_health(state.config)
    {:noreply, start_health_check(state)}
  end

  def handle_info({ref, results}, %{health_task: %Task{ref: ref}} = state) do
    Process.demonitor(ref, [:flush])
    state = Enum.reduce(results, %{state | health_task: nil}, &record_health/2)

    statuses =
      for name <- state.order,
          do: {name, Map.put(info(state.nodes[name]), :health, state.nodes[name].health)}

    Enum.each(state.health_waiters, &GenServer.reply(&1, statuses))
    {:noreply, %{state | health_waiters: []}}
  end

  def handle_info({:DOWN, ref, :process, _, _}, %{health_task: %Task{ref: ref}} = state) do
    {:noreply, %{state | health_task: nil}}
  end

  def handle_info({ref, unanswered}, state) when is_reference(ref) do
    Process.demonitor(ref, [:flush])

    waiters =
      Enum.map(state.stop_waiters, fn waiter ->
        if MapSet.member?(waiter.tasks, ref) do
          %{
            waiter
            | tasks: MapSet.delete(waiter.tasks, ref),
              unanswered: Enum.sort(Enum.uniq(waiter.unanswered ++ unanswered))
          }
        else
          waiter
        end
      end)

    {:noreply, reply_stop_waiters(%{state | stop_waiters: waiters})}
  end

  def handle_info(_other, state), do: {:noreply, state}

  # ── Starting ─────────────────────────────────────────────────────────────────────────────

  defp launch_all(state) do
    config = state.config
    manager = self()

    Enum.reduce(config.slots, state, fn slot, state ->
      node = %{
        spec: spec(config, slot),
        host: slot.host,
        os_pid: nil,
        pgid: nil,
        exec_pid: nil,
        launching: nil,
        status: :booting,
        restart_count: 0,
        buffer: OutputBuffer.new(slot.name),
        health: nil,
        keeper: spawn_link(fn -> keep(manager, slot.name) end)
      }

      state = %{
        state
        | nodes: Map.put(state.nodes, slot.name, node),
          order: state.order ++ [slot.name]
      }

      launch(state, slot.name)
    end)
  end

  defp spec(config, slot) do
    %NodeSpec{
      name: slot.name,
      index: slot.index,
      http_port: slot.http_port,
      hostname: slot.hostname,
      cookie: config.cookie,
      boot: config.boot,
      mix_env: config.mix_env,
      env: config.env,
      host: slot.host,
      manager: node(),
      tether_dir: config.tether_dirs[slot.host]
    }
  end

  # A node's keeper, linked to the manager: it calls `Tether.run/2`, so it owns the node's OS
  # process (a remote start waits for its host here, not in the manager), and forwards its
  # output, tagged with the node's name (os_pids are only unique per host), then its `:DOWN`.
  # If the manager dies, so does the keeper, and Tether stops the OS process on its host.
  defp keep(manager, name) do
    receive do
      {:launch, ref, argv, options} ->
        result =
          try do
            Tether.run(argv, options)
          rescue
            error -> {:error, {:exception, error}}
          end

        send(manager, {:launched, ref, result})
        keep(manager, name)

      {stream, _os_pid, data} when stream in [:stdout, :stderr] ->
        send(manager, {:node_output, name, stream, data})
        keep(manager, name)

      {:DOWN, os_pid, :process, _, _} = down when is_integer(os_pid) ->
        send(manager, down)
        keep(manager, name)

      {:rename, new_name} ->
        keep(manager, new_name)

      :stop ->
        :ok
    end
  end

  # Asks the node's keeper to start its OS process (on its host); `{:launched, ref, result}`
  # follows.
  defp launch(state, name) do
    node = state.nodes[name]
    spec = node.spec
    {argv, options} = NodeSpec.command(spec)
    where = if node.host == node(), do: [], else: [node: node.host]
    Logger.info("Starting cluster node #{name} on #{node.host} (#{NodeSpec.url(spec)})")
    :erlang.set_cookie(name, spec.cookie)
    options = options ++ [:monitor, :stdout, :stderr, kill_timeout: state.config.kill_timeout]
    ref = make_ref()

    # A host we are not connected to is not dialled: that could take seconds.
    if node.host == node() or node.host in Node.list(:connected) do
      send(node.keeper, {:launch, ref, argv, options ++ where})
    else
      send(self(), {:launched, ref, {:error, :nodedown}})
    end

    put_node(state, name, %{node | launching: ref, status: :booting})
  end

  defp launched(state, name, {:ok, pid, os_pid}) do
    node = state.nodes[name]
    # Each OS process leads its own group: its os_pid is the group id (on its host).
    node = %{node | launching: nil, os_pid: os_pid, pgid: os_pid, exec_pid: pid}

    state = %{
      put_node(state, name, node)
      | by_os_pid: Map.put(state.by_os_pid, {node(pid), os_pid}, name)
    }

    if node.status == :stopping do
      # Stopped while it was being started.
      stop_launched(state, name)
    else
      wait_for_boot(node.spec, os_pid, state.config.boot_timeout)
      state
    end
  end

  defp launched(state, name, {:error, reason}) do
    node = %{state.nodes[name] | launching: nil}
    Logger.error("Failed to start cluster node #{name}: #{inspect(reason)}")

    cond do
      node.status == :stopping ->
        state |> put_node(name, %{node | status: :stopped}) |> reply_stop_waiters()

      state.starting ->
        state = put_node(state, name, %{node | status: :stopped})
        fail_start(state, state.starting, {:node_start_failed, name, reason})

      true ->
        notify(state, {:node_failed, name})
        put_node(state, name, %{node | status: :failed})
    end
  end

  # The node connects to us (`TETHER_CLUSTER_MANAGER`): its `nodeup` says it joined. Only a
  # `{:command, fun}` node, which may not, is also tried once a second.
  defp wait_for_boot(spec, os_pid, timeout) do
    manager = self()
    deadline = System.monotonic_time(:millisecond) + timeout

    spawn_link(fn ->
      :ok = :net_kernel.monitor_nodes(true)

      result =
        with :ok <- wait_nodeup(spec, os_pid, deadline),
             :ok <-
               if(NodeSpec.serves_health?(spec),
                 do:
                   until(deadline, fn ->
                     Health.http_get(NodeSpec.url(spec) <> "/health", 500) == :ok
                   end),
                 else: :ok
               ) do
          :ok
        end

      send(manager, {:booted, spec.name, os_pid, result})
    end)
  end

  defp wait_nodeup(spec, os_pid, deadline) do
    left = deadline - System.monotonic_time(:millisecond)

    cond do
      joined?(spec, os_pid) ->
        :ok

      left <= 0 ->
        :timeout

      true ->
        receive do
          {:nodeup, name} when name == spec.name -> :ok
          {:nodedown, name} when name == spec.name -> :ok
        after
          min(left, 1000) -> if match?({:command, _}, spec.boot), do: Node.connect(spec.name)
        end

        wait_nodeup(spec, os_pid, deadline)
    end
  end

  # Connected, and not a previous run of the node still leaving (the connection of a node
  # just killed can outlive it by a moment): an `elixir` node's VM is the OS process we
  # started, so its own OS pid is `os_pid`. A `{:command, fun}` may wrap it; only its name
  # is checked.
  defp joined?(%{boot: {:command, _}} = spec, _os_pid), do: spec.name in Node.list()

  defp joined?(spec, os_pid) do
    spec.name in Node.list() and
      :erpc.call(spec.name, System, :pid, [], 2000) == Integer.to_string(os_pid)
  catch
    :error, {:erpc, _} -> false
  end

  defp until(deadline, check, interval \\ 100) do
    cond do
      check.() ->
        :ok

      System.monotonic_time(:millisecond) > deadline ->
        :timeout

      true ->
        Process.sleep(interval)
        until(deadline, check, interval)
    end
  end

  defp booted(state, name, :ok) do
    node = state.nodes[name]
    Logger.info("Cluster node #{name} joined (os_pid #{node.os_pid} on #{node.host})")
    state = put_node(state, name, %{node | status: :running})

    if node.restart_count > 0, do: notify(state, {:node_restarted, name, info(state.nodes[name])})

    state = maybe_finish_start(state)
    if state.starting == nil and state.config, do: ensure_health_timer(state), else: state
  end

  defp booted(state, name, :timeout) do
    node = state.nodes[name]
    Logger.error("Cluster node #{name} did not join within #{state.config.boot_timeout} ms")

    if state.starting do
      fail_start(state, state.starting, {:node_connection_failed, name})
    else
      # A restart that did not boot: stop it; its DOWN counts as one more crash. From another
      # process: a remote stop waits for its host.
      pid = node.exec_pid
      spawn(fn -> Tether.stop(pid) end)
      put_node(state, name, %{node | status: :boot_failed})
    end
  end

  defp maybe_finish_start(%{starting: nil} = state), do: state

  defp maybe_finish_start(state) do
    if Enum.all?(state.order, &(state.nodes[&1].status == :running)) do
      GenServer.reply(state.starting, {:ok, node_list(state)})
      %{state | starting: nil}
    else
      state
    end
  end

  # Start failed: stop every node, reply with the reason once all are gone.
  defp fail_start(state, from, reason) do
    state = %{state | starting: nil}
    stop_nodes(state, state.order, {:reply_error, from, reason})
  end

  # ── Crashes and restarts ─────────────────────────────────────────────────────────────────

  defp node_down(state, name, reason) do
    node = %{state.nodes[name] | os_pid: nil, exec_pid: nil}

    case node.status do
      :stopping ->
        state |> put_node(name, %{node | status: :stopped}) |> reply_stop_waiters()

      :booting when state.starting != nil ->
        Logger.error("Cluster node #{name} exited while booting: #{inspect(reason)}")
        state = put_node(state, name, %{node | status: :stopped})
        fail_start(state, state.starting, {:node_connection_failed, name})

      _running_booting_or_boot_failed ->
        crashed(state, name, node, reason)
    end
  end

  defp crashed(state, name, node, reason) do
    Logger.error("Cluster node #{name} crashed: #{inspect(reason)}")
    notify(state, {:node_crashed, name, reason})

    cond do
      node.restart_count >= state.config.max_restarts ->
        Logger.error("Cluster node #{name} exceeded its restart limit; giving up")
        give_up(state, name, node)

      match?({:nodedown, _}, reason) and state.config.on_host_down == :fail ->
        Logger.error("Cluster node #{name} lost with its host #{node.host}; giving up")
        give_up(state, name, node)

      match?({:nodedown, _}, reason) ->
        case other_host(state, node.host) do
          nil -> give_up(state, name, node)
          host -> state |> move(name, host) |> schedule_restart()
        end

      true ->
        schedule_restart({state, name})
    end
  end

  defp give_up(state, name, node) do
    notify(state, {:node_failed, name})
    put_node(state, name, %{node | status: :failed})
  end

  defp schedule_restart({state, name}) do
    node = state.nodes[name]
    backoff = state.config.restart_backoff * Integer.pow(2, node.restart_count)

    Logger.info(
      "Restarting cluster node #{name} on #{node.host} in #{backoff} ms " <>
        "(restart #{node.restart_count + 1})"
    )

    Process.send_after(self(), {:restart, name}, backoff)
    put_node(state, name, %{node | status: :restarting})
  end

  # The connected host with the fewest live nodes, other than `lost`.
  defp other_host(state, lost) do
    connected = [node() | Node.list(:connected)]
    live = for {_, n} <- state.nodes, n.status not in [:failed, :stopped], do: n.host

    (state.config.hosts || [])
    |> Enum.filter(&(&1 != lost and &1 in connected))
    |> Enum.min_by(fn host -> Enum.count(live, &(&1 == host)) end, fn -> nil end)
  end

  # Moves node `name` to `host`: a port free there, and a new name if the hostname differs.
  defp move(state, name, host) do
    node = state.nodes[name]
    hostname = Placement.hostname(host)

    used =
      for {other, n} <- state.nodes,
          other != name,
          n.spec.hostname == hostname,
          into: MapSet.new(),
          do: n.spec.http_port

    port =
      if MapSet.member?(used, node.spec.http_port) or hostname != node.spec.hostname,
        do: Placement.next_port(used, state.config.base_http_port),
        else: node.spec.http_port

    new_name = :"#{state.config.name_prefix}#{node.spec.index}@#{hostname}"

    spec = %{
      node.spec
      | name: new_name,
        hostname: hostname,
        http_port: port,
        host: host,
        tether_dir: state.config.tether_dirs[host]
    }

    node = %{node | spec: spec, host: host}

    if new_name == name do
      {put_node(state, name, node), name}
    else
      notify(state, {:node_moved, name, new_name})
      send(node.keeper, {:rename, new_name})

      state = %{
        state
        | nodes: state.nodes |> Map.delete(name) |> Map.put(new_name, node),
          order: Enum.map(state.order, &if(&1 == name, do: new_name, else: &1))
      }

      {state, new_name}
    end
  end

  defp restart(state, name) do
    node = state.nodes[name]

    state =
      put_node(state, name, %{node | restart_count: node.restart_count + 1, status: :booting})

    launch(state, name)
  end

  defp notify(state, message), do: Enum.each(state.subscribers, &send(&1, message))

  # ── Stopping ─────────────────────────────────────────────────────────────────────────────

  # Marks the nodes stopping and hands the stops and the checks to a task, so that a slow or
  # lost host never blocks the manager; the waiter is answered once every node's `:DOWN` is
  # in and the tasks have seen every group gone, or when a host did not answer. A node still
  # being started is stopped once it is (`stop_launched/2`).
  defp stop_nodes(state, names, waiter) do
    {targets, state} =
      Enum.flat_map_reduce(names, state, fn name, state ->
        node = state.nodes[name]

        cond do
          node.exec_pid ->
            Logger.info("Stopping cluster node #{name} (os_pid #{node.os_pid} on #{node.host})")

            {[{node.host, node.exec_pid, node.pgid}],
             put_node(state, name, %{node | status: :stopping})}

          node.launching ->
            {[], put_node(state, name, %{node | status: :stopping})}

          true ->
            {[], put_node(state, name, %{node | status: :stopped})}
        end
      end)

    entry = %{waiter: waiter, names: names, tasks: MapSet.new(), unanswered: []}
    state = %{state | stop_waiters: state.stop_waiters ++ [entry]}
    state |> start_stop_task(names, targets) |> reply_stop_waiters()
  end

  defp stop_launched(state, name) do
    node = state.nodes[name]
    start_stop_task(state, [name], [{node.host, node.exec_pid, node.pgid}])
  end

  # The task's ref joins every pending stop that covers one of `names`.
  defp start_stop_task(state, _names, []), do: state

  defp start_stop_task(state, names, targets) do
    timeout = state.config.stop_timeout
    %Task{ref: ref} = Task.async(fn -> stop_and_confirm(targets, timeout) end)

    waiters =
      Enum.map(state.stop_waiters, fn entry ->
        if Enum.any?(names, &(&1 in entry.names)),
          do: %{entry | tasks: MapSet.put(entry.tasks, ref)},
          else: entry
      end)

    %{state | stop_waiters: waiters}
  end

  # In the task: stops each node on its host and waits until its process group is gone
  # there. Returns the hosts that did not confirm it in time.
  defp stop_and_confirm(targets, timeout) do
    deadline = System.monotonic_time(:millisecond) + timeout

    targets
    |> Enum.group_by(&elem(&1, 0), &Tuple.delete_at(&1, 0))
    |> Task.async_stream(
      fn {host, nodes} -> {host, stop_on_host(host, nodes, deadline)} end,
      timeout: :infinity,
      ordered: false
    )
    |> Enum.flat_map(fn {:ok, {host, result}} -> if result == :ok, do: [], else: [host] end)
    |> Enum.sort()
  end

  defp stop_on_host(host, nodes, deadline) do
    Enum.each(nodes, fn {pid, _} -> on_host(host, Tether, :stop, [pid], deadline) end)
    pgids = for {_, pgid} <- nodes, do: pgid

    until(
      deadline,
      fn -> on_host(host, __MODULE__, :group_members, [pgids], deadline) == [] end,
      20
    )
  catch
    :error, {:erpc, _} -> :no_answer
  end

  defp on_host(host, m, f, a, _deadline) when host == node(), do: apply(m, f, a)

  defp on_host(host, m, f, a, deadline) do
    :erpc.call(host, m, f, a, max(deadline - System.monotonic_time(:millisecond), 1))
  end

  defp reply_stop_waiters(state) do
    {done, waiting} = Enum.split_with(state.stop_waiters, &stop_done?(state, &1))
    state = %{state | stop_waiters: waiting}

    Enum.each(done, fn entry ->
      case {entry.waiter, entry.unanswered} do
        {{:reply_error, from, reason}, _} -> GenServer.reply(from, {:error, reason})
        {from, []} -> GenServer.reply(from, :ok)
        {from, hosts} -> GenServer.reply(from, {:error, {:hosts_not_answering, hosts}})
      end
    end)

    forget_stopped(state)
  end

  # Done when no task is out, and every node is stopped or a host did not answer.
  defp stop_done?(state, %{names: names, tasks: tasks, unanswered: unanswered}) do
    MapSet.size(tasks) == 0 and
      (unanswered != [] or
         Enum.all?(names, &(state.nodes[&1] == nil or state.nodes[&1].status == :stopped)))
  end

  # Stopped nodes no pending stop waits for are forgotten (also those whose host answered
  # late, after their stop had given up on it).
  defp forget_stopped(state) do
    pending = MapSet.new(Enum.flat_map(state.stop_waiters, & &1.names))

    gone =
      for {name, %{status: :stopped}} <- state.nodes, not MapSet.member?(pending, name), do: name

    Enum.each(gone, &send(state.nodes[&1].keeper, :stop))
    %{state | nodes: Map.drop(state.nodes, gone), order: state.order -- gone}
  end

  @doc false
  # Live pids (not zombies) in the process groups `pgids` (or the one `pgid`), from /proc.
  @spec group_members(pos_integer | [pos_integer]) :: [pos_integer]
  def group_members(pgids) do
    groups = pgids |> List.wrap() |> MapSet.new(&Integer.to_string/1)

    for entry <- File.ls!("/proc"),
        {pid, ""} <- [Integer.parse(entry)],
        {:ok, stat} <- [File.read("/proc/#{entry}/stat")],
        [_, rest] <- [String.split(stat, ") ", parts: 2)],
        [state, _ppid, group | _] <- [String.split(rest, " ", parts: 4)],
        state not in ["Z", "X"],
        MapSet.member?(groups, group),
        do: pid
  end

  # ── Health ───────────────────────────────────────────────────────────────────────────────

  defp ensure_health_timer(%{health_timer: true} = state), do: state

  defp ensure_health_timer(state) do
    schedule_health(state.config)
    Map.put(state, :health_timer, true)
  end

  defp schedule_health(nil), do: :ok

  defp schedule_health(config),
    do: Process.send_after(self(), :health_tick, config.health_interval)

  defp start_health_check(%{health_task: %Task{}} = state), do: state

  defp start_health_check(state) do
    targets =
      for name <- state.order,
          node = state.nodes[name],
          node.status == :running,
          do: {name, node.exec_pid, NodeSpec.url(node.spec), NodeSpec.serves_health?(node.spec)}

    task =
      Task.async(fn ->
        targets
        |> Task.async_stream(&check_node/1, timeout: 5000, on_timeout: :kill_task)
        |> Enum.zip(targets)
        |> Enum.map(fn
          {{:ok, health}, {name, _, _, _}} ->
            {name, health}

          {{:exit, _}, {name, _, _, _}} ->
            {name, %{os: :unknown, ping: :pang, http: {:error, :timeout}}}
        end)
      end)

    %{state | health_task: task}
  end

  defp check_node({name, exec_pid, url, http?}) do
    os =
      case Tether.status(exec_pid) do
        {:status, status} -> status
        {:error, reason} -> reason
      end

    http = if http?, do: Health.http_get(url <> "/health"), else: :not_checked
    %{os: os, ping: Node.ping(name), http: http}
  end

  defp record_health({name, health}, state) do
    case state.nodes do
      %{^name => node} ->
        if node.health != health do
          Logger.info("Cluster node #{name} health: #{inspect(health)}")
        end

        put_node(state, name, %{node | health: health})

      _ ->
        state
    end
  end

  # ── Helpers ──────────────────────────────────────────────────────────────────────────────

  defp put_node(state, name, node), do: %{state | nodes: Map.put(state.nodes, name, node)}
  defp update_node(state, name, fun), do: put_node(state, name, fun.(state.nodes[name]))

  defp node_list(state), do: for(name <- state.order, do: {name, info(state.nodes[name])})

  defp info(node) do
    %{
      name: node.spec.name,
      host: node.host,
      http_port: node.spec.http_port,
      url: NodeSpec.url(node.spec),
      hostname: node.spec.hostname,
      os_pid: node.os_pid,
      exec_pid: node.exec_pid,
      status: node.status,
      restart_count: node.restart_count
    }
  end
end
