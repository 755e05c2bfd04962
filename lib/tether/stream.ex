defmodule Tether.Stream do
  @moduledoc false
  # The Enumerable behind `Tether.stream/2` and `Tether.stream!/2`: a process whose stdout is
  # read one chunk per demand (`{:active, :once}`), started lazily by the consumer.

  defmodule ExitError do
    @moduledoc "Raised by a `Tether.stream!/2` whose process did not exit with status 0."
    defexception [:command, :reason]

    @impl true
    def message(%{command: command, reason: reason}) do
      "#{inspect(command)} exited with #{inspect(reason)}"
    end
  end

  @doc false
  @spec new(Tether.command(), keyword, boolean) :: Enumerable.t()
  def new(command, options, raise?) do
    {_spec, run_options, input} = Tether.Options.validate(:stream, command, options)

    Stream.resource(
      fn -> start(command, run_options, input) end,
      &next(&1, command, raise?),
      &halt/1
    )
  end

  defp start(command, options, input) do
    case Tether.Run.run(command, options) do
      {:ok, pid, os_pid} ->
        # The pid, not the os_pid, addresses the process on whichever node it runs. Input is
        # fed by a linked process, at the pace the command reads it, while we take the output.
        feeder = if input, do: spawn_link(fn -> feed(pid, input) end)
        {:running, os_pid, pid, feeder}

      {:error, reason} ->
        raise ExitError, command: command, reason: reason
    end
  end

  # Bytes of Enumerable input that may wait in the stdin queue before feeding waits.
  @feed_window 1_048_576

  @doc false
  # Writes `input` (iodata, or an Enumerable of iodata) to stdin, then EOF. Also for Tether.cmd/3.
  @spec feed(Tether.target(), iodata | Enumerable.t()) :: :ok | {:error, atom}
  def feed(os_pid, input) when is_binary(input) or is_list(input) do
    Tether.Control.send(os_pid, input)
    Tether.Control.send(os_pid, :eof)
  end

  def feed(target, input) do
    # At most a window of input waits in the stdin queue: an endless Enumerable is consumed
    # only as fast as the process reads.
    Enum.reduce_while(input, 0, fn chunk, queued ->
      case feed_chunk(target, chunk, queued + IO.iodata_length(chunk)) do
        {:ok, queued} -> {:cont, queued}
        error -> {:halt, error}
      end
    end)
    |> case do
      queued when is_integer(queued) -> Tether.Control.send(target, :eof)
      error -> error
    end
  end

  # Sends one chunk; once a window is queued, waits for it to be written. Returns what is
  # queued after it.
  defp feed_chunk(target, chunk, queued) when queued < @feed_window do
    with :ok <- Tether.Control.send(target, chunk), do: {:ok, queued}
  end

  defp feed_chunk(target, chunk, _queued) do
    with :ok <- Tether.Control.send(target, chunk),
         :ok <- Tether.Control.flush_stdin(target, :infinity),
         do: {:ok, 0}
  end

  defp next({:done, _, _, _} = state, _command, _raise?), do: {:halt, state}
  defp next({:failed, _, _, _} = state, _command, _raise?), do: {:halt, state}

  defp next({:running, os_pid, pid, feeder} = state, command, raise?) do
    receive do
      {:stdout, ^os_pid, data} ->
        Tether.Control.activate(pid, :once, :stdout)
        {[data], state}

      {:tether_passive, ^os_pid, :stdout} ->
        next(state, command, raise?)

      {:DOWN, ^os_pid, :process, _, reason} ->
        cond do
          not raise? ->
            {[{:exit, reason}], {:done, os_pid, pid, feeder}}

          reason == :normal ->
            {:halt, {:done, os_pid, pid, feeder}}

          # Raised from `halt/1`, once the state says the process is gone.
          true ->
            error = ExitError.exception(command: command, reason: reason)
            {:halt, {:failed, os_pid, error, feeder}}
        end
    end
  end

  # Halted early (or done): stop the process if it still runs, and drop its messages.
  defp halt({:failed, os_pid, error, feeder}) do
    stop_feeder(feeder)
    flush(os_pid)
    raise error
  end

  defp halt({state, os_pid, pid, feeder}) do
    stop_feeder(feeder)

    if state == :running do
      Tether.Control.kill(pid, :sigkill)
      # Its exit waits for the output it left in the pipe to be taken: take it, unread.
      Tether.Control.activate(pid, true, :all)
      drain_until_down(os_pid)
    end

    flush(os_pid)
  end

  # The input is of no use once the output is not wanted (or the process is gone).
  defp stop_feeder(nil), do: :ok

  defp stop_feeder(feeder) do
    Process.unlink(feeder)
    Process.exit(feeder, :kill)
  end

  defp drain_until_down(os_pid) do
    receive do
      {:DOWN, ^os_pid, :process, _, _} -> :ok
      {:stdout, ^os_pid, _} -> drain_until_down(os_pid)
      {:tether_passive, ^os_pid, _} -> drain_until_down(os_pid)
    end
  end

  defp flush(os_pid) do
    receive do
      {:stdout, ^os_pid, _} -> flush(os_pid)
      {:tether_passive, ^os_pid, _} -> flush(os_pid)
    after
      0 -> :ok
    end
  end
end
