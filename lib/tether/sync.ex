defmodule Tether.Sync do
  @moduledoc false
  # Waiting for a run to end: the `:sync` option of `Tether.run/2` and the collection of
  # `Tether.cmd/3`, with one deadline (`deadline/1`, `collect/5`) and one stop when the time is
  # up.

  @type deadline :: integer | :infinity

  @doc false
  # The deadline of a wait of `timeout` ms from now.
  @spec deadline(timeout) :: deadline
  def deadline(:infinity), do: :infinity
  def deadline(timeout), do: now() + timeout

  @doc false
  # Takes the output of `os_pid` (folded with `fun`) until its `:DOWN`, or until `deadline`:
  # then the process is stopped, its exit awaited and its late output dropped.
  @spec collect(Tether.os_pid(), deadline, acc, (acc, :stdout | :stderr, binary -> acc)) ::
          {:down, term, acc} | {:timeout, acc}
        when acc: term
  def collect(os_pid, deadline, acc, fun) do
    timeout = if deadline == :infinity, do: :infinity, else: max(deadline - now(), 0)

    receive do
      {stream, ^os_pid, data} when stream in [:stdout, :stderr] ->
        collect(os_pid, deadline, fun.(acc, stream, data), fun)

      {:DOWN, ^os_pid, :process, _, reason} ->
        {:down, reason, acc}
    after
      timeout ->
        stop_after_timeout(os_pid)
        {:timeout, acc}
    end
  end

  @doc false
  # A `:sync` run: starts it and waits for its result. The `:DOWN` must reach the caller,
  # through the Tether.Process when it runs output handlers.
  @spec run(Tether.Spec.t()) :: {:ok, keyword} | {:error, term}
  def run(spec) do
    spec = if spec.handlers == %{}, do: %{spec | monitor: self()}, else: %{spec | down_to: self()}

    streams = Enum.filter([:stdout, :stderr], &(Map.fetch!(spec, &1) == {:pipe, self()}))
    deadline = deadline(spec.timeout)

    with {:ok, _pid, os_pid} <- Tether.Process.start(spec) do
      case collect(os_pid, deadline, Map.new(streams, &{&1, []}), &keep/3) do
        {:down, reason, acc} -> result(reason, acc)
        {:timeout, _acc} -> {:error, :timeout}
      end
    end
  end

  defp result(reason, acc) do
    output =
      for stream <- [:stdout, :stderr],
          Map.has_key?(acc, stream),
          do: {stream, Enum.reverse(acc[stream])}

    case reason do
      :normal -> {:ok, output}
      {:exit_status, code} -> {:error, [exit_status: code] ++ output}
      {:signal, signal, _core} -> {:error, [exit_signal: signal] ++ output}
      other -> {:error, [exit_status: other] ++ output}
    end
  end

  defp keep(acc, stream, data), do: Map.update(acc, stream, [data], &[data | &1])

  # A :sync run or cmd/3 whose time is up: stop the process, wait for its exit, and drop the
  # output that arrived meanwhile, so nothing of it is left in the caller's mailbox.
  defp stop_after_timeout(os_pid) do
    Tether.Control.stop(os_pid)
    receive do: ({:DOWN, ^os_pid, :process, _, _} -> :ok)
    flush_output(os_pid)
  end

  defp flush_output(os_pid) do
    receive do
      {stream, ^os_pid, _} when stream in [:stdout, :stderr] -> flush_output(os_pid)
    after
      0 -> :ok
    end
  end

  defp now, do: System.monotonic_time(:millisecond)
end
