defmodule Tether.TestCluster.Lifecycle do
  @moduledoc false
  # The manager's nodes from start to crash: launching each through its keeper, learning that
  # it joined (`nodeup`, then a `Tether.TestCluster.Boot` check in a task) or did not in time
  # (a timer), and what a crash leads to (a restart after a backoff, a move to another host,
  # or giving up). Every function takes and returns the manager's state
  # (`Tether.TestCluster.Cluster`); none waits for anything.

  require Logger

  alias Tether.TestCluster.{Boot, Cluster, HealthCheck, Keeper, NodeSpec, Placement, Stopping}
  alias Tether.TestCluster.Node, as: ClusterNode

  # ── Starting ─────────────────────────────────────────────────────────────────────────────

  @doc "Starts every node of `config`; `from` is answered once all joined, or one failed."
  @spec start(Cluster.t(), Tether.TestCluster.Config.t(), GenServer.from()) :: Cluster.t()
  def start(state, config, from) do
    state = %{
      state
      | config: config,
        starting: from,
        subscribers: MapSet.put(state.subscribers, config.subscriber)
    }

    Enum.reduce(config.slots, state, fn slot, state ->
      node = ClusterNode.new(spec(config, slot))

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

  # Asks the node's keeper to start its OS process (on its host); `{:launched, ref, result}`
  # follows.
  defp launch(state, name) do
    node = state.nodes[name]
    spec = node.spec
    {argv, options} = NodeSpec.command(spec)
    where = if node.host == node(), do: [], else: [node: node.host]
    Logger.info("Starting cluster node #{name} on #{node.host} (#{NodeSpec.url(spec)})")
    # The cookie the node connects to us with.
    :erlang.set_cookie(name, spec.cookie)
    options = options ++ [:monitor, :stdout, :stderr, kill_timeout: state.config.kill_timeout]
    ref = make_ref()

    # A host we are not connected to is not dialled: that could take seconds.
    if node.host == node() or node.host in Node.list(:connected) do
      Keeper.launch(node.keeper, ref, argv, options ++ where)
    else
      send(self(), {:launched, ref, {:error, :nodedown}})
    end

    Cluster.put_node(state, name, ClusterNode.launching(node, ref))
  end

  @doc "The keeper's answer to a launch (`ref`)."
  @spec launched(Cluster.t(), reference, {:ok, pid, Tether.os_pid()} | {:error, term}) ::
          Cluster.t()
  def launched(state, ref, result) do
    case Enum.find(state.nodes, fn {_, node} -> node.launching == ref end) do
      {name, _} -> do_launched(state, name, result)
      # Its node is gone: what was started there goes with its owner, the keeper.
      nil -> state
    end
  end

  defp do_launched(state, name, {:ok, pid, os_pid}) do
    node = ClusterNode.launched(state.nodes[name], pid, os_pid)

    state = %{
      Cluster.put_node(state, name, node)
      | by_os_pid: Map.put(state.by_os_pid, {node(pid), os_pid}, name)
    }

    if node.status == :stopping do
      # Stopped while it was being started.
      Stopping.stop_launched(state, name)
    else
      Process.send_after(self(), {:boot_timeout, name, os_pid}, state.config.boot_timeout)
      # It may have connected before we knew its os_pid: that `nodeup` was not checked.
      if name in Node.list(), do: check_boot(state, name), else: state
    end
  end

  defp do_launched(state, name, {:error, reason}) do
    state = Cluster.update_node(state, name, &ClusterNode.launch_failed/1)
    node = state.nodes[name]
    Logger.error("Failed to start cluster node #{name}: #{inspect(reason)}")

    cond do
      node.status == :stopping ->
        state |> Cluster.set_status(name, :stopped) |> Stopping.reply_stop_waiters()

      state.starting ->
        state = Cluster.set_status(state, name, :stopped)
        fail_start(state, {:node_start_failed, name, reason})

      true ->
        Cluster.notify(state, {:node_failed, name})
        Cluster.set_status(state, name, :failed)
    end
  end

  @doc "`{:nodeup, name}`: if it is a booting node, whether it joined is checked."
  @spec nodeup(Cluster.t(), node) :: Cluster.t()
  def nodeup(state, name) do
    case state.nodes do
      %{^name => %{status: :booting, os_pid: os_pid}} when os_pid != nil ->
        check_boot(state, name)

      _ ->
        state
    end
  end

  @doc """
  `{:nodedown, name}`: a booting node already connected again replaced a previous run's
  connection, which a check may have seen; it is checked again.
  """
  @spec nodedown(Cluster.t(), node) :: Cluster.t()
  def nodedown(state, name) do
    if name in Node.list(), do: nodeup(state, name), else: state
  end

  defp check_boot(state, name) do
    %{spec: spec, os_pid: os_pid} = state.nodes[name]
    deadline = System.monotonic_time(:millisecond) + state.config.boot_timeout
    purpose = {:boot_check, name, os_pid}

    {state, _ref} =
      Cluster.start_task(state, purpose, fn -> Boot.check(spec, os_pid, deadline) end)

    state
  end

  @doc "A boot check's answer: the node joined, or that `nodeup` was not its own."
  @spec boot_checked(Cluster.t(), node, Tether.os_pid(), :ok | :not_joined) :: Cluster.t()
  def boot_checked(state, name, os_pid, result) do
    with %{^name => node} <- state.nodes,
         true <- ClusterNode.booting?(node, os_pid),
         :ok <- result do
      booted(state, name)
    else
      _ -> state
    end
  end

  @doc "The `:boot_timeout` of the node's OS process `os_pid` is over."
  @spec boot_timeout(Cluster.t(), node, Tether.os_pid()) :: Cluster.t()
  def boot_timeout(state, name, os_pid) do
    case state.nodes do
      %{^name => node} ->
        if ClusterNode.booting?(node, os_pid), do: not_booted(state, name), else: state

      _ ->
        state
    end
  end

  defp booted(state, name) do
    node = state.nodes[name]
    Logger.info("Cluster node #{name} joined (os_pid #{node.os_pid} on #{node.host})")
    state = Cluster.set_status(state, name, :running)

    if node.restart_count > 0,
      do: Cluster.notify(state, {:node_restarted, name, ClusterNode.info(state.nodes[name])})

    state = maybe_finish_start(state)
    if state.starting == nil and state.config, do: HealthCheck.ensure_timer(state), else: state
  end

  defp not_booted(state, name) do
    node = state.nodes[name]
    Logger.error("Cluster node #{name} did not join within #{state.config.boot_timeout} ms")

    if state.starting do
      fail_start(state, {:node_connection_failed, name})
    else
      # A restart that did not boot: stop it; its DOWN counts as one more crash. From another
      # process: a remote stop waits for its host.
      pid = node.exec_pid
      spawn(fn -> Tether.stop(pid) end)
      Cluster.set_status(state, name, :boot_failed)
    end
  end

  defp maybe_finish_start(%{starting: nil} = state), do: state

  defp maybe_finish_start(state) do
    if Enum.all?(state.order, &(state.nodes[&1].status == :running)) do
      GenServer.reply(state.starting, {:ok, Cluster.node_list(state)})
      %{state | starting: nil}
    else
      state
    end
  end

  # Start failed: stop every node, reply with the reason once all are gone.
  defp fail_start(state, reason) do
    from = state.starting
    state = %{state | starting: nil}
    Stopping.stop_nodes(state, state.order, {:reply_error, from, reason})
  end

  # ── Crashes and restarts ─────────────────────────────────────────────────────────────────

  @doc "The `:DOWN` of node `name`'s OS process."
  @spec node_down(Cluster.t(), node, term) :: Cluster.t()
  def node_down(state, name, reason) do
    state = Cluster.update_node(state, name, &ClusterNode.down/1)
    node = state.nodes[name]

    case node.status do
      :stopping ->
        state |> Cluster.set_status(name, :stopped) |> Stopping.reply_stop_waiters()

      :booting when state.starting != nil ->
        Logger.error("Cluster node #{name} exited while booting: #{inspect(reason)}")
        state = Cluster.set_status(state, name, :stopped)
        fail_start(state, {:node_connection_failed, name})

      _running_booting_or_boot_failed ->
        crashed(state, name, node, reason)
    end
  end

  defp crashed(state, name, node, reason) do
    Logger.error("Cluster node #{name} crashed: #{inspect(reason)}")
    Cluster.notify(state, {:node_crashed, name, reason})

    cond do
      node.restart_count >= state.config.max_restarts ->
        Logger.error("Cluster node #{name} exceeded its restart limit; giving up")
        give_up(state, name)

      match?({:nodedown, _}, reason) and state.config.on_host_down == :fail ->
        Logger.error("Cluster node #{name} lost with its host #{node.host}; giving up")
        give_up(state, name)

      match?({:nodedown, _}, reason) ->
        case other_host(state, node.host) do
          nil -> give_up(state, name)
          host -> state |> move(name, host) |> schedule_restart()
        end

      true ->
        schedule_restart({state, name})
    end
  end

  defp give_up(state, name) do
    Cluster.notify(state, {:node_failed, name})
    Cluster.set_status(state, name, :failed)
  end

  defp schedule_restart({state, name}) do
    node = state.nodes[name]
    backoff = state.config.restart_backoff * Integer.pow(2, node.restart_count)

    Logger.info(
      "Restarting cluster node #{name} on #{node.host} in #{backoff} ms " <>
        "(restart #{node.restart_count + 1})"
    )

    Process.send_after(self(), {:restart, name}, backoff)
    Cluster.set_status(state, name, :restarting)
  end

  @doc "The backoff of node `name` is over: it is started again, if it is still to be."
  @spec restart(Cluster.t(), node) :: Cluster.t()
  def restart(state, name) do
    case state.nodes do
      %{^name => %{status: :restarting}} ->
        state |> Cluster.update_node(name, &ClusterNode.restarting/1) |> launch(name)

      _ ->
        state
    end
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

    node = ClusterNode.moved(node, spec)

    if new_name == name do
      {Cluster.put_node(state, name, node), name}
    else
      Cluster.notify(state, {:node_moved, name, new_name})

      state = %{
        state
        | nodes: state.nodes |> Map.delete(name) |> Map.put(new_name, node),
          order: Enum.map(state.order, &if(&1 == name, do: new_name, else: &1))
      }

      {state, new_name}
    end
  end
end
