defmodule Tether.History do
  @moduledoc false
  # Keeps what `Tether.info/1` reports of processes that have exited (their final counters and
  # resource usage), for the last 1,024 exits or so, and the node-wide counters of
  # `Tether.info/0`. Writers are the caller of run/2 (the start) and the Tether.Process of each
  # OS process (the exit); the tables are public.
  use GenServer

  @table :tether_history
  @keep 1024
  @counters {__MODULE__, :counters}
  @counter_index %{spawned: 1, exited: 2, spawn_errors: 3}

  def start_link(_), do: GenServer.start_link(__MODULE__, :ok, name: __MODULE__)

  @doc false
  def count(event), do: :counters.add(counters(), @counter_index[event], 1)

  @doc false
  def totals do
    ref = counters()
    Map.new(@counter_index, fn {name, index} -> {name, :counters.get(ref, index)} end)
  end

  @doc false
  # Once the application has stopped (a detached child exiting later) there is no table: the
  # exit is not kept, and the Tether.Process still exits with the true reason.
  def record(os_pid, info) do
    if table?() do
      :ets.insert(@table, {os_pid, System.monotonic_time(), info})
      prune_when_full()
    end

    :ok
  rescue
    # The table went between the check and the insert.
    ArgumentError -> :ok
  end

  defp table?, do: :ets.whereis(@table) != :undefined

  defp prune_when_full do
    if :ets.info(@table, :size) > 2 * @keep, do: send(__MODULE__, :prune)
    :ok
  end

  @doc false
  # The record of a start, written by the caller of run/2 once the OS process exists. The
  # Tether.Process may already have recorded the exit of that same process (a short-lived
  # command, a busy scheduler): that record is kept. One left by an earlier process with the
  # same (recycled) os_pid is replaced.
  def record_start(os_pid, %{pid: pid} = info) do
    entry = {os_pid, System.monotonic_time(), info}

    recorded? =
      :ets.insert_new(@table, entry) or
        :ets.select_replace(@table, [
          {{os_pid, :_, :"$1"}, [{:"=/=", {:map_get, :pid, :"$1"}, pid}], [{:const, entry}]}
        ]) > 0

    if recorded?, do: prune_when_full()
    :ok
  end

  @doc false
  def lookup(os_pid) do
    case table?() && :ets.lookup(@table, os_pid) do
      [{^os_pid, _, info}] -> {:ok, info}
      [] -> {:error, :no_process}
      false -> {:error, :not_started}
    end
  end

  @doc false
  # The os_pid of the exited process that `pid` stood for.
  def os_pid_of(pid) do
    case table?() && :ets.match(@table, {:"$1", :_, %{pid: pid}}) do
      [[os_pid] | _] -> {:ok, os_pid}
      [] -> {:error, :no_process}
      false -> {:error, :not_started}
    end
  end

  defp counters do
    case :persistent_term.get(@counters, nil) do
      nil -> raise ArgumentError, "the :tether application is not started"
      ref -> ref
    end
  end

  @impl true
  def init(:ok) do
    :ets.new(@table, [:named_table, :public, :set, write_concurrency: true])

    if :persistent_term.get(@counters, nil) == nil do
      :persistent_term.put(
        @counters,
        :counters.new(map_size(@counter_index), [:write_concurrency])
      )
    end

    {:ok, nil}
  end

  @impl true
  def handle_info(:prune, state) do
    entries = :ets.select(@table, [{{:"$1", :"$2", :_}, [], [{{:"$2", :"$1"}}]}])
    excess = length(entries) - @keep

    if excess > 0 do
      entries
      |> Enum.sort()
      |> Enum.take(excess)
      |> Enum.each(fn {_, os_pid} -> :ets.delete(@table, os_pid) end)
    end

    {:noreply, state}
  end
end
