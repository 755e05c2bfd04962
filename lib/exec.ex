defmodule :exec do
  @moduledoc """
  An erlexec-compatible API over Tether, for code written against erlexec 2.x: change the
  dependency in `mix.exs` and keep the calls. See `MIGRATING.md` for where it differs on
  purpose.

  As in erlexec, a server registered as `exec` owns the OS processes: `start/0,1` and
  `start_link/1` start it (code that runs a command first starts it on first use), and when it
  stops, its children are stopped. It takes erlexec's start options, `root`, `{user, U}` and
  `{limit_users, L}` included: children run as the effective user, and `{user, X}` outside
  `limit_users` is refused. The Tether application (`:tether`) and, for projects that list it,
  an `:erlexec` application (started with the options of `config :erlexec`) are provided.

  Shapes and errors are erlexec's: `{:ok, pid, os_pid}`, `{:stdout, os_pid, data}`,
  `{:DOWN, os_pid, :process, pid, reason}` with `reason` `normal` or the raw wait status
  `{:exit_status, status}` (exit code 1 is `256`), `normal` after `stop/1`; sync results
  `{:ok, [stdout: [...]]}` (streams that produced nothing are left out) and
  `{:error, [exit_status: status, ...]}`; `{:error, {:invalid_option, option}}` for a bad
  option. String commands run under `$SHELL -c` (`/bin/sh` when `SHELL` is unset); lists of
  strings run directly.

  Capabilities are erlexec's, with the VM in the place of its port program: a run's
  `{capabilities, Caps}` gives the child, whether it runs as root or as another user, exactly
  those of `Caps` that the VM holds (`all`: every one it holds), within the start option's, as
  its effective, permitted, inheritable and ambient sets (so they survive `execve`; see
  `Tether.run/2`'s `:capabilities`). `{capabilities, Caps}` at start bounds every child: a child
  that runs as root holds exactly `Caps` (the rest dropped from its bounding set too), one that
  runs as another user what its run asks for of `Caps`. `[]` means no option, at start as in a
  run. Without either, children of a root VM hold every capability, and children run as
  another user none.

  Each OS process is started with `Tether.run/2` by a small proxy process (the `pid`
  returned), which translates the exit reason. Output goes straight from Tether to its
  destination.
  """

  alias Tether.Exec.{Options, Owner, Proxy}

  @typedoc "An OS process id."
  @type ospid :: integer
  @typedoc "An OS process group id."
  @type osgid :: integer

  @timeout 30_000

  # ── Starting the server ─────────────────────────────────────────────────────────────────

  @doc "Starts the `exec` server, not linked to the caller. See `start/1`."
  @spec start() :: {:ok, pid} | {:error, term}
  def start, do: start([])

  @doc """
  Starts the `exec` server, not linked to the caller: `{:ok, pid}`, or
  `{:error, {:already_started, pid}}` when it runs.

  Options are erlexec's: `root` (with `{user, User}` and `{limit_users, Users}`: children run as
  `User` unless a run asks for another user of `Users`), `{env, Env}` (added to every child's
  environment), `debug`, `{debug, N}`, `verbose`, `{capabilities, Caps}` (the most any child
  holds; a child that runs as root holds exactly those: see the moduledoc and `MIGRATING.md`),
  and the port program's `args`, `alarm`, `portexe`, `valgrind`, which mean
  nothing without a port program. Errors are erlexec's strings (`"Cannot specify effective
  user..."`), or `{:invalid_option, option}`.
  """
  @spec start(list) :: {:ok, pid} | {:error, term}
  def start(options) do
    with {:ok, _} <- check_start(options),
         do: GenServer.start(Owner, options, name: __MODULE__)
  end

  @doc "Starts the `exec` server linked to the caller (for supervision trees). See `start/1`."
  @spec start_link(list) :: {:ok, pid} | {:error, term}
  def start_link(options) do
    with {:ok, _} <- check_start(options),
         do: GenServer.start_link(Owner, options, name: __MODULE__)
  end

  @doc false
  def child_spec(options) do
    unless proper_list?(options),
      do: raise(ArgumentError, ":exec options must be a proper list, got: #{inspect(options)}")

    %{
      id: :exec,
      start: {:exec, :start_link, [options]},
      type: :worker,
      shutdown: 30_000
    }
  end

  defp check_start(options) do
    unless proper_list?(options),
      do: raise(ArgumentError, ":exec options must be a proper list, got: #{inspect(options)}")

    with {:ok, parsed} <- Options.start_options(options),
         {:ok, _} <- Application.ensure_all_started(:tether) do
      {:ok, parsed}
    end
  end

  # The server, started on first use (under Tether's supervisor) when nobody started it.
  defp server do
    with nil <- Process.whereis(__MODULE__),
         :none <- app_server() do
      {:ok, _} = Application.ensure_all_started(:tether)

      case Tether.Exec.Server.start_exec(config_options()) do
        {:ok, pid} -> pid
        {:error, reason} -> exit({reason, {__MODULE__, :start, []}})
      end
    else
      pid when is_pid(pid) -> pid
      :down -> exit({:noproc, {__MODULE__, :server, []}})
    end
  end

  # While the `erlexec` application runs, its supervisor owns the server: between the server's
  # death and its restart, a server started here would make that restart fail (already
  # started), and the application stop. Its supervisor is asked instead, which answers once
  # it has restarted the server; while it cannot, the call finds no process, as erlexec's.
  defp app_server do
    with sup when is_pid(sup) <- Process.whereis(:exec_app),
         # Tether.Exec.App's supervisor, not another process of that name, which might not answer.
         {:ok, :erlexec} <- :application.get_application(sup),
         [{:exec, pid, _, _}] <- Supervisor.which_children(sup) do
      if is_pid(pid), do: pid, else: :down
    else
      _ -> :none
    end
  catch
    # The application is stopping: the server is started here.
    :exit, _ -> :none
  end

  defp config_options do
    for key <- [:debug, :verbose, :root, :user, :limit_users, :capabilities, :env],
        {:ok, value} <- [:application.get_env(:erlexec, key)],
        do: {key, value}
  end

  defp call(request), do: GenServer.call(server(), request, @timeout)

  # The os_pid of a proxy of the running server (nil for any other pid), as the server knows it:
  # a pid is nobody's proxy while no server runs, and none is started to say so.
  defp proxy_os_pid(pid) when node(pid) == node() do
    case Process.whereis(__MODULE__) do
      nil -> nil
      server -> GenServer.call(server, {:ospid, pid}, @timeout)
    end
  catch
    # The server went meanwhile (before or during the call: killed, stopped), and its proxies
    # with it: erlexec's `ospid/1` asks the pid itself, and no server's death reaches its caller.
    :exit, _ -> nil
  end

  defp proxy_os_pid(_pid), do: nil

  # A request that starts an OS process, bounded by the caller's `timeout` as erlexec's call to
  # its port is. When the time is up the answer is `{:error, :timeout}`, and the process the
  # request may still start is abandoned: its proxy leaves, so Tether stops it. (The late reply
  # itself is dropped by GenServer.call.)
  defp start_call(request, timeout) do
    server = server()
    ref = make_ref()

    try do
      GenServer.call(server, Tuple.append(request, ref), timeout)
    catch
      :exit, {:timeout, _} ->
        Kernel.send(server, {:"$exec_abandon", ref})
        {:error, :timeout}
    end
  end

  defp check_timeout!(timeout) when timeout == :infinity or timeout in 0..4_294_967_295,
    do: :ok

  defp check_timeout!(timeout),
    do: raise(ArgumentError, "invalid timeout: #{inspect(timeout)} (expected 0..4294967295 ms)")

  defp proper_list?([]), do: true
  defp proper_list?([_ | tail]), do: proper_list?(tail)
  defp proper_list?(_), do: false

  # ── Running ─────────────────────────────────────────────────────────────────────────────

  @doc "Runs a command with erlexec's options (see the moduledoc for the shapes)."
  @spec run(term, list) :: {:ok, pid, ospid} | {:ok, list} | {:error, term}
  def run(command, options), do: run(command, options, @timeout)

  @doc """
  Runs a command; `timeout` bounds the start, as erlexec's call to its port. With `sync`, waits
  for the exit and returns `{:ok, output}` or `{:error, [{:exit_status, status} | output]}`,
  where `output` holds only the streams (sent to the caller) that produced something.
  """
  @spec run(term, list, timeout) :: {:ok, pid, ospid} | {:ok, list} | {:error, term}
  def run(command, options, timeout) do
    check_timeout!(timeout)

    with {:ok, command} <- Options.command(command),
         {:ok, tether_options, flags} <- Options.translate(options, self()),
         {:ok, pid, os_pid} <-
           start_call({:run, command, tether_options, flags, self()}, timeout) do
      if flags.sync, do: wait_for_exit(os_pid, pid, [], []), else: {:ok, pid, os_pid}
    end
  end

  @doc "Like `run/2`, linked to the caller."
  @spec run_link(term, list) :: {:ok, pid, ospid} | {:ok, list} | {:error, term}
  def run_link(command, options), do: run_link(command, options, @timeout)

  @doc "Like `run/3`, linked to the caller."
  @spec run_link(term, list, timeout) :: {:ok, pid, ospid} | {:ok, list} | {:error, term}
  def run_link(command, options, timeout) when is_list(options),
    do: run(command, [:link | options], timeout)

  def run_link(_command, options, _timeout), do: {:error, {:invalid_option, options}}

  defp wait_for_exit(os_pid, pid, out, err) do
    receive do
      {:stdout, ^os_pid, data} -> wait_for_exit(os_pid, pid, [data | out], err)
      {:stderr, ^os_pid, data} -> wait_for_exit(os_pid, pid, out, [data | err])
      {:DOWN, ^os_pid, :process, ^pid, :normal} -> {:ok, sync_result(out, err)}
      {:DOWN, ^os_pid, :process, ^pid, reason} -> {:error, [reason | sync_result(out, err)]}
    end
  end

  defp sync_result([], []), do: []
  defp sync_result([], err), do: [stderr: Enum.reverse(err)]
  defp sync_result(out, err), do: [{:stdout, Enum.reverse(out)} | sync_result([], err)]

  @doc "Adopts an OS process started elsewhere (an os_pid or a port). See `manage/3`."
  @spec manage(ospid | port, list) :: {:ok, pid, ospid} | {:error, term}
  def manage(target, options), do: manage(target, options, @timeout)

  @doc """
  Adopts an OS process started elsewhere: it can be stopped, killed and monitored like a
  child. Its exit status cannot be known (it is not our child): its `DOWN` reason is
  `{exit_status, -1}`, or `normal` after `stop/1`, as erlexec reports. `{:error, :not_found}`
  when there is no such process.
  """
  @spec manage(ospid | port, list, timeout) :: {:ok, pid, ospid} | {:error, term}
  def manage(port, options, timeout) when is_port(port) do
    case Port.info(port, :os_pid) do
      {:os_pid, os_pid} -> manage(os_pid, options, timeout)
      nil -> {:error, :not_found}
    end
  end

  def manage(os_pid, options, timeout) when is_integer(os_pid) do
    check_timeout!(timeout)

    with {:ok, tether_options, flags} <- Options.translate(options, self()) do
      manage_options =
        Keyword.take(tether_options, [:kill, :kill_timeout]) ++ [kill_group: flags.kill_group]

      start_call({:manage, os_pid, manage_options, flags, self()}, timeout)
    end
  end

  def manage(other, _options, _timeout), do: {:error, {:invalid_option, other}}

  # ── Talking to processes ────────────────────────────────────────────────────────────────

  @doc """
  Writes to a process's stdin (`eof` closes it). As in erlexec, data for an os_pid that is not
  running (or whose stdin is closed) is dropped: `:ok`; an unknown pid gives
  `{:error, :no_process}`.
  """
  @spec send(pid | ospid, binary | :eof) :: :ok | {:error, term}
  def send(pid, data) when is_pid(pid) do
    case proxy_os_pid(pid) do
      nil -> {:error, :no_process}
      os_pid -> __MODULE__.send(os_pid, data)
    end
  end

  def send(os_pid, data) when is_integer(os_pid) and (is_binary(data) or data == :eof) do
    case Tether.send(os_pid, data) do
      :ok -> :ok
      {:error, reason} when reason in [:no_process, :closed] -> :ok
    end
  end

  def send(target, data) when is_integer(target),
    do:
      raise(
        ArgumentError,
        "invalid data for :exec.send/2: #{inspect(data)} (expected a binary or :eof)"
      )

  def send(target, _data),
    do:
      raise(
        ArgumentError,
        "invalid target for :exec.send/2: #{inspect(target)} (expected a pid or an os_pid)"
      )

  @doc "Sets the window size of a `pty` process."
  @spec winsz(pid | ospid, integer, integer) :: :ok | {:error, term}
  def winsz(target, rows, cols) when is_integer(rows) and is_integer(cols) do
    with {:ok, os_pid} <- child(target) do
      case rows in 1..65_535 and cols in 1..65_535 and Tether.winsz(os_pid, rows, cols) do
        :ok -> :ok
        {:error, :no_process} -> {:error, ~c"pid #{os_pid} doesn't exist"}
        _ -> {:error, ~c"failed to set window size"}
      end
    end
  end

  def winsz(_target, _rows, _cols), do: {:error, :badarg}

  @doc """
  Sets terminal options of a running `pty` process: erlexec's `ttymodes` (`{:echo, true}`,
  `{:vintr, 2}`, …). Bad values give `{:error, {:invalid_pty_value, bad_entries}}`.
  """
  @spec pty_opts(pid | ospid, list) :: :ok | {:error, term}
  def pty_opts(target, options) do
    with :ok <- Options.check_pty_opts(options),
         {:ok, os_pid} <- child(target) do
      Tether.Exec.Terminal.set(os_pid, options)
    end
  end

  @doc """
  Stops a process: its kill command or SIGTERM (to its group with `kill_group`), then SIGKILL
  after its kill timeout. Its `DOWN` reason is then `normal`. `{:error, 'pid not alive'}` for
  an os_pid that is not a child, `{:error, :no_process}` for a pid that is not one.
  """
  @spec stop(pid | ospid | port) :: :ok | {:error, term}
  def stop(port) when is_port(port), do: with_port(port, &stop/1)
  def stop(target) when is_pid(target) or is_integer(target), do: call({:stop, target})
  def stop(_target), do: {:error, :badarg}

  @doc """
  Stops a process like `stop/1` and waits up to `timeout` ms for the `DOWN` message of a
  `monitor`ed process, which it takes from the mailbox and returns the reason of. Without a
  monitor there is no message to wait for: `{:error, :timeout}`. An os_pid that is not a child
  gives `{:error, :not_found}`, a pid that is not one `{:error, :no_process}` at once (erlexec
  waits `timeout` for a DOWN that cannot come). A bad `timeout` raises `ArgumentError` before
  anything is stopped.
  """
  @spec stop_and_wait(pid | ospid | port, timeout) :: term
  def stop_and_wait(target, timeout) do
    check_timeout!(timeout)
    do_stop_and_wait(target, timeout)
  end

  defp do_stop_and_wait(port, timeout) when is_port(port),
    do: with_port(port, &do_stop_and_wait(&1, timeout))

  defp do_stop_and_wait(os_pid, timeout) when is_integer(os_pid) do
    case call({:pid, os_pid}) do
      :undefined -> {:error, :not_found}
      pid -> do_stop_and_wait(pid, timeout)
    end
  end

  defp do_stop_and_wait(pid, timeout) when is_pid(pid) do
    # The stop is not bounded by `timeout` (erlexec's is, and exits when it is short): the
    # wait for the DOWN is. A pid that is no :exec process sends none (erlexec waits anyway).
    case call({:stop, pid}) do
      {:error, :no_process} ->
        {:error, :no_process}

      _ ->
        receive do
          {:DOWN, _ref, :process, ^pid, status} -> status
        after
          timeout -> {:error, :timeout}
        end
    end
  end

  defp do_stop_and_wait(_target, _timeout), do: {:error, :badarg}

  @doc """
  Sends a signal (a number or a name) to a process; with `kill_group`, to its group (erlexec
  signals only the process: see `MIGRATING.md`). `{:error, 'Cannot kill a pid not managed by this application'}` for an os_pid that
  is not a child.
  """
  @spec kill(pid | ospid | port, integer | atom) :: :ok | {:error, term}
  def kill(port, signal) when is_port(port), do: with_port(port, &kill(&1, signal))

  def kill(target, signal) when is_pid(target) or is_integer(target) do
    case signal_number(signal) do
      {:ok, number} -> call({:kill, target, number})
      :error -> {:error, :badarg}
    end
  end

  def kill(_target, _signal), do: {:error, :badarg}

  # erlexec's names first (its `signal_to_int/1`: `sigrtmin` is 34, `sigrtmax` 64), then the
  # others Tether knows (`:term`, `:SIGTERM`…).
  defp signal_number(signal) when is_atom(signal) do
    with :error <- Tether.Signal.table_number(signal), do: Tether.Signal.number(signal)
  end

  defp signal_number(signal) when is_integer(signal), do: Tether.Signal.number(signal)

  defp signal_number(_), do: :error

  @doc """
  Moves a process into process group `gid`, as erlexec's `setpgid/2` asks. The kernel allows
  this only before the process executes its program (`EACCES` after), so for a running child
  the answer is `{:error, :eacces}`; an os_pid that is not a child gives
  `{:error, 'pid N doesn't exist'}`.
  """
  @spec setpgid(ospid, osgid) :: :ok | {:error, term}
  def setpgid(os_pid, gid) when is_integer(os_pid) and is_integer(gid) do
    with {:ok, _os_pid} <- child(os_pid), do: {:error, :eacces}
  end

  def setpgid(_os_pid, _gid), do: {:error, :badarg}

  @doc "The os_pids of the `exec` server's children, ascending."
  @spec which_children() :: [ospid]
  def which_children, do: call(:which_children)

  @doc """
  The os_pid behind an `:exec` pid. As in erlexec, any other pid is asked with
  `{{self(), ref}, :ospid}` and has 5 s to answer `{ref, reply}`; then `{:error, :timeout}`. A pid
  that is not alive (or dies before it answers) gives `{:error, :no_process}` at once, and so
  does the caller's own pid, which cannot answer while it waits.
  """
  @spec ospid(pid) :: ospid | {:error, term}
  def ospid(pid) when is_pid(pid) do
    cond do
      os_pid = proxy_os_pid(pid) -> os_pid
      pid == self() -> {:error, :no_process}
      true -> ask_ospid(pid)
    end
  end

  def ospid(other),
    do: raise(ArgumentError, "invalid pid for :exec.ospid/1: #{inspect(other)}")

  # erlexec's protocol, which other code speaks too (exexec's tests answer it), watched with a
  # monitor: no waiting for a reply from a process that is gone.
  defp ask_ospid(pid) do
    ref = Process.monitor(pid)
    Kernel.send(pid, {{self(), ref}, :ospid})

    receive do
      {^ref, reply} ->
        Process.demonitor(ref, [:flush])
        reply

      {:DOWN, ^ref, :process, ^pid, _} ->
        {:error, :no_process}
    after
      5000 ->
        Process.demonitor(ref, [:flush])
        {:error, :timeout}
    end
  end

  @doc "The `:exec` pid of an os_pid, or `:undefined`."
  @spec pid(ospid) :: pid | :undefined
  def pid(os_pid) when is_integer(os_pid), do: call({:pid, os_pid})

  def pid(other),
    do: raise(ArgumentError, "invalid os_pid for :exec.pid/1: #{inspect(other)}")

  @doc """
  Sets the debug level (0..10) and returns the previous one; `{:error, :badarg}` for any other
  value. Accepted for compatibility: Tether logs through Logger.
  """
  @spec debug(term) :: {:ok, non_neg_integer} | {:error, :badarg}
  def debug(level) when is_integer(level) and level in 0..10, do: call({:debug, level})
  def debug(_level), do: {:error, :badarg}

  defp with_port(port, fun) do
    case Port.info(port, :os_pid) do
      {:os_pid, os_pid} -> fun.(os_pid)
      nil -> {:error, :no_process}
    end
  end

  # The os_pid of a child of the server, given its os_pid or its pid.
  defp child(pid) when is_pid(pid) do
    case proxy_os_pid(pid) do
      nil -> {:error, :no_process}
      os_pid -> {:ok, os_pid}
    end
  end

  defp child(os_pid) when is_integer(os_pid) do
    case call({:pid, os_pid}) do
      :undefined -> {:error, ~c"pid #{os_pid} doesn't exist"}
      _pid -> {:ok, os_pid}
    end
  end

  defp child(_other), do: {:error, :badarg}

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

  def status(other),
    do: raise(ArgumentError, "invalid wait status for :exec.status/1: #{inspect(other)}")

  @doc """
  The name of a signal number (the number itself when it has none).

      iex> :exec.signal(15)
      :sigterm
      iex> :exec.signal(40)
      40
  """
  @spec signal(integer) :: atom | integer
  def signal(number) when is_integer(number), do: Tether.Signal.name(number)

  def signal(other),
    do: raise(ArgumentError, "invalid signal number for :exec.signal/1: #{inspect(other)}")

  @doc """
  The number of a signal name.

      iex> :exec.signal_to_int(:sigkill)
      9
  """
  @spec signal_to_int(atom) :: integer
  def signal_to_int(name) do
    case Tether.Signal.table_number(name) do
      {:ok, number} ->
        number

      :error ->
        raise ArgumentError, "invalid signal name for :exec.signal_to_int/1: #{inspect(name)}"
    end
  end

  @doc false
  # Tether's exit reason in erlexec's form: the raw wait status.
  @spec to_erlexec_reason(Tether.Process.reason()) :: :normal | {:exit_status, integer} | atom
  defdelegate to_erlexec_reason(reason), to: Proxy
end
