defmodule :exec do
  @moduledoc """
  An erlexec-compatible API over Tether, for code written against erlexec 2.x: change the
  dependency in `mix.exs` and keep the calls. See `MIGRATING.md` for where it differs on
  purpose.

  Shapes are erlexec's: `{:ok, pid, os_pid}`, `{:stdout, os_pid, data}`,
  `{:DOWN, os_pid, :process, pid, reason}` with `reason` `normal` or the raw wait status
  `{:exit_status, status}` (exit code 1 is `256`), and `normal` after `stop/1`; sync results
  `{:ok, [stdout: [...]]}` / `{:error, [exit_status: status, ...]}`. Commands are strings (run
  by `/bin/sh -c`) or lists of strings, as charlists or binaries. Bad options give
  `{:error, {:invalid_option, message}}`.

  It is a thin layer: each OS process is started with `Tether.run/2` by a small proxy process
  (the `pid` returned), which translates the exit reason. Output goes straight from Tether to
  its destination.
  """

  alias Tether.Exec.{Options, Proxy}

  @type ospid :: pos_integer

  # ── Starting the "application" ──────────────────────────────────────────────────────────

  @doc "Ensures Tether runs; erlexec's options (`debug`, `root`, `portexe`…) are accepted."
  @spec start() :: {:ok, pid}
  def start, do: start([])

  @doc false
  @spec start(list) :: {:ok, pid}
  def start(_options) do
    {:ok, _} = Application.ensure_all_started(:tether)
    {:ok, Process.whereis(Tether.Exec.Server)}
  end

  @doc "For supervision trees that list `:exec`: starts a placeholder linked to the caller."
  @spec start_link(list) :: {:ok, pid}
  def start_link(options \\ []) do
    {:ok, _} = start(options)
    {:ok, spawn_link(fn -> Process.sleep(:infinity) end)}
  end

  @doc false
  def child_spec(options) do
    %{id: :exec, start: {:exec, :start_link, [List.wrap(options)]}, type: :worker}
  end

  # ── Running ─────────────────────────────────────────────────────────────────────────────

  @doc "Runs a command (see the moduledoc for the shapes)."
  @spec run(term, list, timeout) :: {:ok, pid, ospid} | {:ok, list} | {:error, term}
  def run(command, options, timeout \\ :infinity) do
    with_valid_options(command, options, fn command, tether_options, flags ->
      if flags.sync do
        run_sync(command, tether_options, timeout)
      else
        Proxy.start(command, tether_options, flags, self())
      end
    end)
  end

  @doc "Like `run/3`, linked to the caller."
  @spec run_link(term, list, timeout) :: {:ok, pid, ospid} | {:ok, list} | {:error, term}
  def run_link(command, options, timeout \\ :infinity) do
    run(command, [:link | List.wrap(options)], timeout)
  end

  defp with_valid_options(command, options, fun) do
    command = Options.command(command)
    {tether_options, flags} = Options.translate(options, self())
    fun.(command, tether_options, flags)
  rescue
    error in ArgumentError -> {:error, {:invalid_option, Exception.message(error)}}
  end

  defp run_sync(command, options, timeout) do
    options = [:sync | options] ++ if(timeout == :infinity, do: [], else: [timeout: timeout])

    case Tether.run(command, options) do
      {:error, [{:exit_status, code} | output]} ->
        {:error, [{:exit_status, code * 256} | output]}

      {:error, [{:exit_signal, signal} | output]} ->
        {:error, [{:exit_status, Tether.signal_number(signal)} | output]}

      other ->
        other
    end
  end

  @doc "Adopts an OS process started elsewhere (an os_pid or a port)."
  @spec manage(ospid | port, list) :: {:ok, pid, ospid} | {:error, term}
  def manage(port, options) when is_port(port) do
    {:os_pid, os_pid} = Port.info(port, :os_pid)
    manage(os_pid, options)
  end

  def manage(os_pid, options) when is_integer(os_pid) do
    case Tether.manage(
           os_pid,
           Enum.filter(List.wrap(options), &(&1 in [:monitor] or match?({:kill_timeout, _}, &1)))
         ) do
      {:ok, pid, os_pid} -> {:ok, pid, os_pid}
      error -> error
    end
  end

  # ── Talking to processes ────────────────────────────────────────────────────────────────

  @doc "Writes to a process's stdin (`eof` closes it)."
  @spec send(pid | ospid, binary | :eof) :: :ok | {:error, term}
  def send(target, data) do
    with {:ok, os_pid} <- resolve(target), do: Tether.send(os_pid, data)
  end

  @doc "Sets the window size of a pty process."
  @spec winsz(pid | ospid, pos_integer, pos_integer) :: :ok | {:error, term}
  def winsz(target, rows, cols) do
    with {:ok, os_pid} <- resolve(target), do: Tether.winsz(os_pid, rows, cols)
  end

  @doc "Sets pty options of a running process: only `{:winsz, {rows, cols}}` is supported."
  @spec pty_opts(pid | ospid, list) :: :ok | {:error, term}
  def pty_opts(target, options) do
    Enum.reduce_while(options, :ok, fn
      {:winsz, {rows, cols}}, :ok -> {:cont, winsz(target, rows, cols)}
      other, _ -> {:halt, {:error, {:unsupported, other}}}
    end)
  end

  @doc "Stops a process: its kill command or SIGTERM, then SIGKILL after its kill timeout."
  @spec stop(pid | ospid | port) :: :ok | {:error, term}
  def stop(target) do
    with {:ok, os_pid} <- resolve(target) do
      # Before the signal: the proxy must know by the time the exit reaches it.
      if proxy = proxy_of(os_pid), do: Proxy.stopping(proxy)
      Tether.stop(os_pid)
    end
  end

  @doc "Stops a process and waits up to `timeout` ms for its exit; returns the exit reason."
  @spec stop_and_wait(pid | ospid, timeout) :: term
  def stop_and_wait(target, timeout) do
    with {:ok, os_pid} <- resolve(target) do
      proxy = proxy_of(os_pid)
      ref = proxy && Process.monitor(proxy)

      with :ok <- stop(os_pid) do
        receive do
          {:DOWN, ^ref, :process, _, reason} -> reason
        after
          timeout -> {:error, :timeout}
        end
      end
    end
  end

  @doc "Sends a signal (an integer or a name) to a process."
  @spec kill(pid | ospid, integer | atom) :: :ok | {:error, term}
  def kill(target, signal) do
    with {:ok, os_pid} <- resolve(target), do: Tether.kill(os_pid, signal)
  end

  @doc "The os_pids of every running process."
  @spec which_children() :: [ospid]
  def which_children, do: Tether.which_processes()

  @doc "The os_pid behind an `:exec` pid."
  @spec ospid(pid) :: ospid | {:error, term}
  def ospid(pid) when is_pid(pid) do
    case resolve(pid) do
      {:ok, os_pid} -> os_pid
      error -> error
    end
  end

  @doc "The `:exec` pid of an os_pid, or `:undefined`."
  @spec pid(ospid) :: pid | :undefined
  def pid(os_pid) when is_integer(os_pid) do
    proxy_of(os_pid) || with({:ok, pid} <- Tether.pid(os_pid), do: pid, else: (_ -> :undefined))
  end

  @doc "Sets the debug level (accepted for compatibility; Tether logs through Logger)."
  @spec debug(non_neg_integer) :: {:ok, non_neg_integer}
  def debug(level) when is_integer(level) and level >= 0 do
    GenServer.call(Tether.Exec.Server, {:debug, level})
  end

  # ── Statuses and signals ────────────────────────────────────────────────────────────────

  @doc """
  Decodes a raw wait status.

      iex> :exec.status(256)
      {:status, 1}
      iex> :exec.status(9)
      {:signal, :sigkill, false}
      iex> :exec.status(139)
      {:signal, :sigsegv, true}
  """
  @spec status(integer) :: {:status, integer} | {:signal, atom | integer, boolean}
  def status(raw) when is_integer(raw) do
    import Bitwise

    case raw &&& 0x7F do
      0 -> {:status, raw >>> 8 &&& 0xFF}
      signal -> {:signal, signal(signal), (raw &&& 0x80) != 0}
    end
  end

  @doc """
  The name of a signal number (the number itself when it has none).

      iex> :exec.signal(15)
      :sigterm
  """
  @spec signal(integer) :: atom | integer
  def signal(number) when is_integer(number) do
    Enum.find(signal_names(), number, &(Tether.signal_number(&1) == number))
  end

  @doc """
  The number of a signal name.

      iex> :exec.signal_to_int(:sigkill)
      9
  """
  @spec signal_to_int(atom) :: integer
  def signal_to_int(name) when is_atom(name), do: Tether.signal_number(name)

  defp signal_names do
    ~w(sighup sigint sigquit sigill sigtrap sigabrt sigbus sigfpe sigkill sigusr1 sigsegv sigusr2
       sigpipe sigalrm sigterm sigstkflt sigchld sigcont sigstop sigtstp sigttin sigttou sigurg
       sigxcpu sigxfsz sigvtalrm sigprof sigwinch sigio sigpwr sigsys)a
  end

  @doc false
  # Tether's exit reason in erlexec's form: the raw wait status.
  @spec to_erlexec_reason(Tether.Process.reason()) :: :normal | {:exit_status, integer} | atom
  def to_erlexec_reason(:normal), do: :normal
  def to_erlexec_reason({:exit_status, code}), do: {:exit_status, code * 256}

  def to_erlexec_reason({:signal, signal, core?}) do
    number = if is_integer(signal), do: signal, else: Tether.signal_number(signal)
    {:exit_status, number + if(core?, do: 128, else: 0)}
  end

  def to_erlexec_reason(other), do: other

  # ── Helpers ─────────────────────────────────────────────────────────────────────────────

  defp resolve(os_pid) when is_integer(os_pid), do: {:ok, os_pid}

  defp resolve(port) when is_port(port) do
    case Port.info(port, :os_pid) do
      {:os_pid, os_pid} -> {:ok, os_pid}
      nil -> {:error, :no_process}
    end
  end

  defp resolve(pid) when is_pid(pid) and node(pid) == node() do
    case Process.info(pid, :dictionary) do
      {:dictionary, dictionary} -> proxy_os_pid(pid, dictionary)
      nil -> {:error, :no_process}
    end
  end

  defp resolve(_other), do: {:error, :no_process}

  defp proxy_os_pid(pid, dictionary) do
    case dictionary[:"$exec_os_pid"] do
      os_pid when is_integer(os_pid) -> {:ok, os_pid}
      nil -> Tether.os_pid(pid)
    end
  end

  defp proxy_of(os_pid) do
    case :ets.lookup(Tether.Exec.Server.table(), os_pid) do
      [{^os_pid, proxy}] -> if Process.alive?(proxy), do: proxy
      [] -> nil
    end
  end
end
