defmodule Tether.TestCluster.Stopping do
  @moduledoc false
  # Stopping nodes, for the manager. The nodes are marked `:stopping` and the stops and the
  # checks are handed to a task, so that a slow or lost host never blocks the manager; the
  # waiter is answered once every node's `:DOWN` is in and the tasks have seen every group
  # gone, or when a host did not answer. A node still being started is stopped once it is
  # (`stop_launched/2`).

  require Logger

  alias Tether.TestCluster.{Cluster, Node}

  @typedoc "Who is answered: a caller, or the caller of a start that failed with `reason`."
  @type waiter :: GenServer.from() | {:reply_error, GenServer.from(), term}

  @typedoc "A pending stop: its nodes, the tasks still out for it, the hosts that did not answer."
  @type entry :: %{
          waiter: waiter,
          names: [node],
          tasks: MapSet.t(reference),
          unanswered: [node]
        }

  @doc "Stops nodes `names`; `waiter` is answered once they are gone."
  @spec stop_nodes(Cluster.t(), [node], waiter) :: Cluster.t()
  def stop_nodes(state, names, waiter) do
    {targets, state} =
      Enum.flat_map_reduce(names, state, fn name, state ->
        node = state.nodes[name]

        cond do
          node.exec_pid ->
            Logger.info("Stopping cluster node #{name} (os_pid #{node.os_pid} on #{node.host})")
            {[{node.host, node.exec_pid, node.pgid}], Cluster.set_status(state, name, :stopping)}

          node.launching ->
            {[], Cluster.set_status(state, name, :stopping)}

          true ->
            {[], Cluster.set_status(state, name, :stopped)}
        end
      end)

    entry = %{waiter: waiter, names: names, tasks: MapSet.new(), unanswered: []}
    state = %{state | stop_waiters: state.stop_waiters ++ [entry]}
    state |> start_stop_task(names, targets) |> reply_stop_waiters()
  end

  @doc "Stops node `name`, whose start completed after it was asked to stop."
  @spec stop_launched(Cluster.t(), node) :: Cluster.t()
  def stop_launched(state, name) do
    node = state.nodes[name]
    start_stop_task(state, [name], [{node.host, node.exec_pid, node.pgid}])
  end

  @doc "A stop task is done; `unanswered` are the hosts that did not confirm it in time."
  @spec task_done(Cluster.t(), reference, [node]) :: Cluster.t()
  def task_done(state, ref, unanswered) do
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

    reply_stop_waiters(%{state | stop_waiters: waiters})
  end

  @doc "Answers the waiters whose stop is done, and forgets the nodes none waits for."
  @spec reply_stop_waiters(Cluster.t()) :: Cluster.t()
  def reply_stop_waiters(state) do
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

  # The task's ref joins every pending stop that covers one of `names`.
  defp start_stop_task(state, _names, []), do: state

  defp start_stop_task(state, names, targets) do
    timeout = state.config.stop_timeout
    {state, ref} = Cluster.start_task(state, :stop, fn -> stop_and_confirm(targets, timeout) end)

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

  # A group has no event for its last member's exit (`:DOWN` is its leader's), so the task
  # looks at the host's /proc until it is empty.
  defp stop_on_host(host, nodes, deadline) do
    Enum.each(nodes, fn {pid, _} -> on_host(host, Tether, :stop, [pid], deadline) end)
    pgids = for {_, pgid} <- nodes, do: pgid
    groups_gone(host, pgids, deadline)
  catch
    :error, {:erpc, _} -> :no_answer
  end

  defp groups_gone(host, pgids, deadline) do
    cond do
      on_host(host, Tether.ProcFs, :group_members, [pgids], deadline) == [] ->
        :ok

      System.monotonic_time(:millisecond) > deadline ->
        :timeout

      true ->
        Process.sleep(20)
        groups_gone(host, pgids, deadline)
    end
  end

  defp on_host(host, m, f, a, _deadline) when host == node(), do: apply(m, f, a)

  defp on_host(host, m, f, a, deadline) do
    :erpc.call(host, m, f, a, max(deadline - System.monotonic_time(:millisecond), 1))
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

    Enum.each(gone, &Node.forget(state.nodes[&1]))
    %{state | nodes: Map.drop(state.nodes, gone), order: state.order -- gone}
  end
end
