defmodule Tether.TestCluster.Manager do
  @moduledoc """
  Starts several BEAM nodes as OS processes, waits until they join the cluster, watches them,
  restarts the ones that crash, and stops them all without leaving anything behind.

      {:ok, nodes} = Tether.TestCluster.Manager.start_cluster(node_count: 2)
      # both nodes are in Node.list() and answer HTTP on their ports
      :ok = Tether.TestCluster.Manager.stop_cluster()
      # every node's OS process and process group are gone

  The manager is a `GenServer`; `start_cluster/1` starts one (registered under this module's
  name, supervised by Tether) when none is running. It owns the nodes' OS processes: if it dies,
  Tether stops them.

  ## Options of `start_cluster/1`

    * `:node_count` - number of nodes. Defaults to `2`.
    * `:base_http_port` - node `i` (from 1) serves HTTP on `base_http_port + i`. Defaults to `4100`.
    * `:cookie` - the cluster cookie (an atom). Defaults to `:tether_cluster`.
    * `:hostname` - the host part of node names. Defaults to `"127.0.0.1"`.
    * `:name_prefix` - nodes are named `:"<prefix><i>@<hostname>"`. Defaults to `"tether_n"`.
    * `:boot` - what each node runs: `:elixir` (default), `{:mix_run, project_dir}` or
      `{:command, fun}`; see `Tether.TestCluster.NodeSpec`.
    * `:boot_timeout` - milliseconds a node has to join (and, for `:elixir`, to answer HTTP).
      Defaults to `30_000`.
    * `:mix_env` - the `MIX_ENV` nodes get. Defaults to `"dev"`.
    * `:env` - extra environment for every node, `[{"NAME", "value"}]`.
    * `:kill_timeout` - seconds between SIGTERM and SIGKILL when a node is stopped. Defaults to `5`.
    * `:max_restarts` - restarts per node before it is given up. Defaults to `3`.
    * `:restart_backoff` - milliseconds before the first restart, doubled for each further one.
      Defaults to `500`.
    * `:health_interval` - milliseconds between health checks. Defaults to `2000`.
    * `:subscriber` - the pid that gets crash notices. Defaults to the caller.

  ## Messages to subscribers

    * `{:node_crashed, name, reason}` - a node's OS process ended without being asked to;
      `reason` as in Tether's `:DOWN` (`{:signal, :sigkill, false}`, `{:exit_status, 1}`, …).
    * `{:node_restarted, name, info}` - a crashed node was started again and rejoined.
    * `{:node_failed, name}` - a node crashed after `:max_restarts` restarts, or its restart
      did not boot; it is not restarted again.

  ## Node info

  `nodes` (from `start_cluster/1` and `nodes/0`) is a list of `{name, info}`, in node order,
  where `info` is a map with `:name`, `:http_port`, `:url`, `:hostname`, `:os_pid`,
  `:exec_pid` (the `Tether.Process`), `:status` (`:booting`, `:running`, `:restarting`,
  `:stopping`, `:failed`) and `:restart_count`.
  """

  use GenServer
  require Logger

  alias Tether.TestCluster.{Health, NodeSpec, OutputBuffer}

  @type name :: node
  @type info :: %{
          name: name,
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
    base_http_port: 4100,
    cookie: :tether_cluster,
    hostname: "127.0.0.1",
    name_prefix: "tether_n",
    boot: :elixir,
    boot_timeout: 30_000,
    mix_env: "dev",
    env: [],
    kill_timeout: 5,
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
  `{:node_connection_failed, name}` for a node that did not join in time.
  """
  @spec start_cluster(keyword) :: {:ok, [{name, info}]} | {:error, term}
  def start_cluster(options \\ []) do
    {manager, options} = Keyword.pop(options, :manager, __MODULE__)
    config = validate!(options)
    GenServer.call(ensure_started(manager), {:start_cluster, config}, :infinity)
  end

  @doc "Stops every node; returns `:ok` once every OS process and process group is gone."
  @spec stop_cluster(GenServer.server()) :: :ok
  def stop_cluster(manager \\ __MODULE__) do
    if alive?(manager), do: GenServer.call(manager, :stop_cluster, :infinity), else: :ok
  end

  @doc "Stops one node, like `stop_cluster/1`."
  @spec stop_node(name, GenServer.server()) :: :ok | {:error, :unknown_node}
  def stop_node(name, manager \\ __MODULE__) do
    GenServer.call(manager, {:stop_node, name}, :infinity)
  end

  @doc "The nodes and their info, in node order."
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
      base_http_port: &(is_integer(&1) and &1 > 0 and &1 < 65_000),
      cookie: &(is_atom(&1) and &1 not in [nil, true, false]),
      hostname: &(is_binary(&1) and &1 != ""),
      name_prefix: &(is_binary(&1) and &1 =~ ~r/^[A-Za-z][A-Za-z0-9_]*$/),
      boot: &valid_boot?/1,
      boot_timeout: &(is_integer(&1) and &1 > 0),
      mix_env: &is_binary/1,
      env: &is_list/1,
      kill_timeout: &(is_number(&1) and &1 >= 0),
      max_restarts: &(is_integer(&1) and &1 >= 0),
      restart_backoff: &(is_integer(&1) and &1 >= 0),
      health_interval: &(is_integer(&1) and &1 > 0)
    ]

    for {key, valid?} <- checks, not valid?.(config[key]) do
      raise ArgumentError, "invalid value for #{inspect(key)} option: #{inspect(config[key])}"
    end

    subscriber = Keyword.get(options, :subscriber, self())
    is_pid(subscriber) or raise ArgumentError, "invalid value for :subscriber option"
    Map.new(config) |> Map.put(:subscriber, subscriber)
  end

  defp valid_boot?(:elixir), do: true
  defp valid_boot?({:mix_run, dir}), do: is_binary(dir) and File.dir?(dir)
  defp valid_boot?({:command, fun}), do: is_function(fun, 1)
  defp valid_boot?(_), do: false

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

    with :ok <- ensure_distributed(config.hostname),
         {:ok, state} <- launch_all(state) do
      {:noreply, %{state | starting: from}}
    else
      {:error, reason, state} -> {:noreply, fail_start(state, from, reason)}
      {:error, reason} -> {:reply, {:error, reason}, state}
    end
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
  def handle_info({stream, os_pid, data}, state) when stream in [:stdout, :stderr] do
    case state.by_os_pid do
      %{^os_pid => name} ->
        {:noreply,
         update_node(state, name, &%{&1 | buffer: OutputBuffer.add(&1.buffer, stream, data)})}

      _ ->
        {:noreply, state}
    end
  end

  def handle_info({:DOWN, os_pid, :process, _pid, reason}, state) when is_integer(os_pid) do
    case Map.pop(state.by_os_pid, os_pid) do
      {nil, _} -> {:noreply, state}
      {name, by_os_pid} -> {:noreply, node_down(%{state | by_os_pid: by_os_pid}, name, reason)}
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

  def handle_info(_other, state), do: {:noreply, state}

  # ── Starting ─────────────────────────────────────────────────────────────────────────────

  defp ensure_distributed(hostname) do
    if Node.alive?() do
      :ok
    else
      # epmd daemonizes and leaves its own group: it outlives us on purpose, like `erl -name`.
      with {:ok, _, epmd} <- Tether.run(["epmd", "-daemon"], [:monitor]) do
        receive do
          {:DOWN, ^epmd, :process, _, _} -> :ok
        after
          5000 -> :ok
        end
      end

      name = :"tether_manager_#{System.unique_integer([:positive])}@#{hostname}"

      case Node.start(name, :longnames) do
        {:ok, _} -> :ok
        {:error, reason} -> {:error, {:distribution_failed, reason}}
      end
    end
  end

  defp launch_all(state) do
    config = state.config

    Enum.reduce_while(1..config.node_count, {:ok, state}, fn index, {:ok, state} ->
      spec = %NodeSpec{
        name: :"#{config.name_prefix}#{index}@#{config.hostname}",
        index: index,
        http_port: config.base_http_port + index,
        hostname: config.hostname,
        cookie: config.cookie,
        boot: config.boot,
        mix_env: config.mix_env,
        env: config.env
      }

      node = %{
        spec: spec,
        os_pid: nil,
        pgid: nil,
        exec_pid: nil,
        status: :booting,
        restart_count: 0,
        buffer: OutputBuffer.new(spec.name),
        health: nil
      }

      state = %{
        state
        | nodes: Map.put(state.nodes, spec.name, node),
          order: state.order ++ [spec.name]
      }

      case launch(state, spec.name) do
        {:ok, state} -> {:cont, {:ok, state}}
        {:error, reason, state} -> {:halt, {:error, reason, state}}
      end
    end)
  end

  # Starts a node's OS process and a task that waits for it to join.
  defp launch(state, name) do
    node = state.nodes[name]
    spec = node.spec
    {argv, options} = NodeSpec.command(spec)
    Logger.info("Starting cluster node #{name} on #{spec.hostname}:#{spec.http_port}")
    :erlang.set_cookie(name, spec.cookie)

    options = options ++ [:monitor, :stdout, :stderr, kill_timeout: state.config.kill_timeout]

    case Tether.run(argv, options) do
      {:ok, pid, os_pid} ->
        wait_for_boot(spec, os_pid, state.config.boot_timeout)
        # Each OS process leads its own group: its os_pid is the group id.
        node = %{node | os_pid: os_pid, pgid: os_pid, exec_pid: pid, status: :booting}

        {:ok,
         %{
           state
           | nodes: Map.put(state.nodes, name, node),
             by_os_pid: Map.put(state.by_os_pid, os_pid, name)
         }}

      {:error, reason} ->
        Logger.error("Failed to start cluster node #{name}: #{inspect(reason)}")
        {:error, {:node_start_failed, name, reason}, state}
    end
  end

  defp wait_for_boot(spec, os_pid, timeout) do
    manager = self()
    deadline = System.monotonic_time(:millisecond) + timeout

    spawn_link(fn ->
      result =
        with :ok <- until(deadline, fn -> Node.connect(spec.name) == true end),
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

  defp until(deadline, check) do
    cond do
      check.() -> :ok
      System.monotonic_time(:millisecond) > deadline -> :timeout
      true -> Process.sleep(100) && until(deadline, check)
    end
  end

  defp booted(state, name, :ok) do
    node = state.nodes[name]
    Logger.info("Cluster node #{name} joined (os_pid #{node.os_pid})")
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
      # A restart that did not boot: stop it; its DOWN counts as one more crash.
      Tether.stop(node.os_pid)
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

    if node.restart_count < state.config.max_restarts do
      backoff = state.config.restart_backoff * Integer.pow(2, node.restart_count)

      Logger.info(
        "Restarting cluster node #{name} in #{backoff} ms (restart #{node.restart_count + 1})"
      )

      Process.send_after(self(), {:restart, name}, backoff)
      put_node(state, name, %{node | status: :restarting})
    else
      Logger.error("Cluster node #{name} exceeded its restart limit; giving up")
      notify(state, {:node_failed, name})
      put_node(state, name, %{node | status: :failed})
    end
  end

  defp restart(state, name) do
    node = state.nodes[name]

    state =
      put_node(state, name, %{node | restart_count: node.restart_count + 1, status: :booting})

    case launch(state, name) do
      {:ok, state} ->
        state

      {:error, _reason, state} ->
        notify(state, {:node_failed, name})
        put_node(state, name, %{state.nodes[name] | status: :failed})
    end
  end

  defp notify(state, message), do: Enum.each(state.subscribers, &send(&1, message))

  # ── Stopping ─────────────────────────────────────────────────────────────────────────────

  defp stop_nodes(state, names, waiter) do
    state =
      Enum.reduce(names, state, fn name, state ->
        node = state.nodes[name]

        if node.os_pid do
          Logger.info("Stopping cluster node #{name} (os_pid #{node.os_pid})")
          Tether.stop(node.os_pid)
          put_node(state, name, %{node | status: :stopping})
        else
          put_node(state, name, %{node | status: :stopped})
        end
      end)

    reply_stop_waiters(%{state | stop_waiters: [{waiter, names} | state.stop_waiters]})
  end

  # Replies to every stop whose nodes are all gone (groups included), then forgets them.
  defp reply_stop_waiters(state) do
    {done, waiting} =
      Enum.split_with(state.stop_waiters, fn {_, names} ->
        Enum.all?(names, &(state.nodes[&1] == nil or state.nodes[&1].status == :stopped))
      end)

    state = %{state | stop_waiters: waiting}

    Enum.reduce(done, state, fn {waiter, names}, state ->
      Enum.each(names, fn name -> if node = state.nodes[name], do: wait_group_gone(node) end)
      state = forget(state, names)

      case waiter do
        {:reply_error, from, reason} -> GenServer.reply(from, {:error, reason})
        from -> GenServer.reply(from, :ok)
      end

      state
    end)
  end

  # Tether SIGKILLs the rest of a stopping child's group when its leader exits; this waits the
  # few milliseconds the kernel needs to finish them, so `:ok` means nothing is left.
  defp wait_group_gone(%{pgid: nil}), do: :ok

  defp wait_group_gone(%{pgid: pgid}) do
    deadline = System.monotonic_time(:millisecond) + 5000
    until(deadline, fn -> group_members(pgid) == [] end)
  end

  defp forget(state, names) do
    nodes = Map.drop(state.nodes, names)
    %{state | nodes: nodes, order: state.order -- names}
  end

  @doc false
  # Live pids (not zombies) in process group `pgid`, read from /proc.
  @spec group_members(pos_integer) :: [pos_integer]
  def group_members(pgid) do
    for entry <- File.ls!("/proc"),
        {pid, ""} <- [Integer.parse(entry)],
        {:ok, stat} <- [File.read("/proc/#{entry}/stat")],
        [_, rest] <- [String.split(stat, ") ", parts: 2)],
        [state, _ppid, group | _] <- [String.split(rest, " ", parts: 4)],
        state not in ["Z", "X"],
        group == Integer.to_string(pgid),
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
          do: {name, node.os_pid, NodeSpec.url(node.spec), NodeSpec.serves_health?(node.spec)}

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

  defp check_node({name, os_pid, url, http?}) do
    os =
      case Tether.status(os_pid) do
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
