defmodule Tether.Control do
  @moduledoc false
  # What `Tether` does to one OS process given by os_pid or pid: stop, kill, status, stdin,
  # window size, flow control, and the os_pid <-> pid lookups. A pid of another node is sent to
  # that node, here and only here: on_node/5 is the one dispatch.

  @max_os_pid 0x7FFFFFFF

  @doc false
  @spec stop(Tether.target()) :: :ok | {:error, :no_process}
  def stop(target) do
    on_node(target, __MODULE__, :stop, [], fn ->
      with {:ok, os_pid} <- resolve(target) do
        Tether.Trace.event(os_pid, fn -> "Tether stopping #{os_pid}" end)
        Tether.Native.stop(os_pid)
      end
    end)
  end

  @doc false
  @spec kill(Tether.target(), Tether.signal()) :: :ok | {:error, :no_process}
  def kill(target, signal) do
    on_node(target, __MODULE__, :kill, [signal], fn ->
      number = Tether.Signal.number!(signal)

      with {:ok, os_pid} <- resolve(target) do
        Tether.Trace.event(os_pid, fn -> "Tether sending signal #{number} to #{os_pid}" end)
        Tether.Native.kill(os_pid, number)
      end
    end)
  end

  @doc false
  @spec status(Tether.target()) ::
          {:status, :running | :stopping | :stopped} | {:error, :no_process}
  def status(target) do
    on_node(target, __MODULE__, :status, [], fn ->
      with {:ok, os_pid} <- resolve(target), do: Tether.Native.status(os_pid)
    end)
  end

  @doc false
  @spec send(Tether.target(), iodata | :eof) :: :ok | {:error, :no_process | :closed}
  def send(target, data) do
    on_node(target, __MODULE__, :send, [data], fn -> send_local(target, data) end)
  end

  defp send_local(target, :eof) do
    with {:ok, os_pid} <- resolve(target), do: Tether.Native.close_stdin(os_pid)
  end

  defp send_local(target, data) when is_binary(data) or is_list(data) do
    binary =
      try do
        IO.iodata_to_binary(data)
      rescue
        ArgumentError -> raise ArgumentError, "expected iodata or :eof, got: #{inspect(data)}"
      end

    with {:ok, os_pid} <- resolve(target), do: Tether.Native.write(os_pid, binary)
  end

  defp send_local(_target, data) do
    raise ArgumentError, "expected iodata or :eof, got: #{inspect(data)}"
  end

  @doc false
  @spec flush_stdin(Tether.target(), timeout) :: :ok | {:error, :no_process | :closed | :timeout}
  def flush_stdin(target, timeout) do
    on_node(target, __MODULE__, :flush_stdin, [timeout], fn ->
      flush_stdin_local(target, timeout)
    end)
  end

  defp flush_stdin_local(target, timeout)
       when timeout == :infinity or (is_integer(timeout) and timeout >= 0) do
    ref = make_ref()

    with {:ok, os_pid} <- resolve(target),
         :ok <- Tether.Native.stdin_flushed(os_pid, self(), ref) do
      receive do
        {:tether_stdin_flushed, ^ref, true} -> :ok
        {:tether_stdin_flushed, ^ref, false} -> {:error, :closed}
      after
        timeout ->
          # Drop the answer if it comes later.
          receive do: ({:tether_stdin_flushed, ^ref, _} -> :ok), after: (0 -> :ok)
          {:error, :timeout}
      end
    end
  end

  defp flush_stdin_local(_target, timeout) do
    raise ArgumentError, "expected a timeout (ms or :infinity), got: #{inspect(timeout)}"
  end

  @doc false
  @spec winsz(Tether.target(), pos_integer, pos_integer) :: :ok | {:error, :no_process}
  def winsz(target, rows, cols) do
    on_node(target, __MODULE__, :winsz, [rows, cols], fn ->
      (rows in 1..65_535 and cols in 1..65_535) or
        raise ArgumentError,
              "invalid window size: #{inspect({rows, cols})} (expected 1..65535 each)"

      with {:ok, os_pid} <- resolve(target), do: Tether.Native.winsz(os_pid, rows, cols)
    end)
  end

  @doc false
  @spec activate(Tether.target(), true | :once | non_neg_integer, :stdout | :stderr | :all) ::
          :ok | {:error, :no_process}
  def activate(target, mode, stream) do
    on_node(target, __MODULE__, :activate, [mode, stream], fn ->
      stream in [:stdout, :stderr, :all] or
        raise ArgumentError,
              "invalid stream for Tether.activate/3: #{inspect(stream)} " <>
                "(expected :stdout, :stderr or :all)"

      credit =
        case Tether.Options.active!(mode) do
          true -> nil
          :once -> 1
          n -> n
        end

      stream = if stream == :all, do: nil, else: stream
      with {:ok, os_pid} <- resolve(target), do: Tether.Native.activate(os_pid, stream, credit)
    end)
  end

  @doc false
  @spec os_pid(pid) :: {:ok, Tether.os_pid()} | {:error, :no_process}
  def os_pid(pid) when is_pid(pid),
    do: on_node(pid, __MODULE__, :os_pid, [], fn -> Tether.Process.os_pid(pid) end)

  def os_pid(other), do: raise(ArgumentError, "expected a Tether pid, got: #{inspect(other)}")

  @doc false
  @spec pid(Tether.os_pid()) :: {:ok, pid} | {:error, :no_process}
  def pid(os_pid) do
    with {:ok, os_pid} <- resolve(os_pid), do: Tether.Native.process_of(os_pid)
  end

  @doc false
  # The os_pid of a target of this node; ArgumentError for what is no target at all.
  @spec resolve(term) :: {:ok, Tether.os_pid()} | {:error, :no_process}
  def resolve(os_pid) when is_integer(os_pid) and os_pid > 0 and os_pid <= @max_os_pid,
    do: {:ok, os_pid}

  def resolve(os_pid) when is_integer(os_pid), do: {:error, :no_process}
  def resolve(pid) when is_pid(pid), do: Tether.Process.os_pid(pid)

  def resolve(other) do
    raise ArgumentError, "expected an os_pid (integer) or a Tether pid, got: #{inspect(other)}"
  end

  @doc false
  # Runs `local` here, or `module.fun(target, args...)` on the node of a remote pid (where the
  # arguments are checked: an ArgumentError raised there is raised here).
  @spec on_node(term, module, atom, list, (() -> result)) :: result when result: term
  def on_node(pid, module, fun, args, _local) when is_pid(pid) and node(pid) != node() do
    :erpc.call(node(pid), module, fun, [pid | args], 30_000)
  catch
    :error, {:erpc, :noconnection} -> {:error, :no_process}
    :error, {:erpc, reason} -> {:error, reason}
    :error, {:exception, %ArgumentError{} = error, _} -> raise error
  end

  def on_node(_target, _module, _fun, _args, local), do: local.()
end
