defmodule Tether do
  @moduledoc """
  Start, watch, talk to and stop OS processes from the BEAM.

  A Rust NIF owns the OS processes: one event-loop thread spawns them (without copying the VM's
  memory), reads their output and watches their exit through pidfds, and sends messages straight
  to the processes that asked. Nothing blocks a scheduler, and no OS process outlives its owner.

      iex> {:ok, pid, os_pid} = Tether.run(["echo", "hello"], [:stdout, :monitor])
      iex> is_pid(pid) and is_integer(os_pid)
      true
      iex> receive do {:stdout, ^os_pid, data} -> data end
      "hello\\n"
      iex> receive do {:DOWN, ^os_pid, :process, ^pid, reason} -> reason end
      :normal

  ## Commands

    * a list of strings, `["ls", "-l"]`: the program is searched on `PATH` like `execvp` does
      (the child's `PATH` when `:env` sets one), with no shell in between;
    * a string, `"ls -l | wc -l"`: run by `/bin/sh -c`.

  A program that cannot be executed is reported at once by `run/2` as `{:error, errno}`:
  `{:error, :enoent}`, `{:error, :eacces}`, `{:error, :enoexec}`… A `:cd` that does not exist
  gives `{:error, :enoent}` too.

  ## Options

  A list of atoms and `{key, value}` tuples (a keyword list works):

    * `:monitor` - send one `{:DOWN, os_pid, :process, pid, reason}` to the caller when the OS
      process has exited and all of its output has been delivered.
    * `:stdout`, `:stderr` - send the stream to the caller as `{:stdout, os_pid, binary}` and
      `{:stderr, os_pid, binary}`.
    * `{:stdout, destination}`, `{:stderr, destination}` - where the stream goes: a local pid,
      `{:send, pid}` (the same), or `:null` (discard; the default for both streams).
    * `{:env, env}` - changes to the inherited environment, applied in order: `{"NAME", "value"}`
      sets, `{"NAME", false}` (or `nil`) unsets, `:clear` empties the environment.
    * `{:cd, dir}` - the working directory.
    * `{:kill_timeout, seconds}` - time between the SIGTERM of `stop/1` and SIGKILL. Defaults
      to `5`. `0` kills at once.
    * `{:kill_group, boolean}` - `stop/1` and `kill/2` address the child's whole process group
      (the child leads a new group). Defaults to `true`; with `false` the child stays in the
      VM's group and only it is signalled.
    * `{:executable, path}` - the program to execute, when `argv[0]` should be something else.
    * `{:group, 0}` - the child leads a new process group (the default; erlexec's spelling).
    * `{:detach, true}` - let the process outlive its owner and the VM on purpose: it is not
      stopped when its owner dies or its `Tether.Process` goes, not stopped when the `:tether`
      application stops, not killed when the VM dies. `stop/1` and `kill/2` still work while the
      VM lives. Defaults to `false`.

  Bad options raise `ArgumentError` naming the option; nothing is spawned.

  ## Messages

  | message | sent to | when |
  |---|---|---|
  | `{:stdout, os_pid, binary}` | the `:stdout` destination | output arrives |
  | `{:stderr, os_pid, binary}` | the `:stderr` destination | output arrives |
  | `{:DOWN, os_pid, :process, pid, reason}` | the caller, with `:monitor` | after the last output |

  `reason` is `:normal` (exit status 0), `{:exit_status, code}` (1..255),
  `{:signal, name, core_dumped?}` (`{:signal, :sigkill, false}`; real-time signals by number),
  or `:unknown` when the status was lost. `pid` (a `Tether.Process`) exits with the same reason
  (`:normal` for status 0), so monitors and links on it see it too.

  ## Lifetime

  No OS process outlives its owner unless it was started with `{:detach, true}`:

    * each child leads its own process group, so `stop/1` and `kill/2` reach its grandchildren;
      when a stopped child's leader exits, what is left of its group is killed at once;
    * when the process that called `run/2` exits (normally or not), its OS processes are stopped
      like `stop/1` does; so are they when their `Tether.Process` is killed;
    * when the `:tether` application stops (`Application.stop/1`, `System.stop/0`), every OS
      process is stopped, and the stop returns as soon as the last one has exited;
    * when the VM dies, even by SIGKILL, the kernel kills the direct children
      (`PR_SET_PDEATHSIG`) and a watchdog program (`tether_watchdog`, started by the native
      event loop with a pipe on its stdin) sees the pipe close and SIGKILLs every child's group.
      If the watchdog itself is killed, a new one is started at once and told every live group.

  A child's own children that leave its process group (`setsid`, daemons) are not tracked.
  """

  @typedoc "An OS process id."
  @type os_pid :: pos_integer

  @typedoc "An argv list (searched on `PATH`) or a shell command line."
  @type command :: [String.t()] | String.t()

  @typedoc "See the moduledoc."
  @type options :: [atom | {atom, term}]

  @typedoc "An OS process: its os_pid or the pid of its `Tether.Process`."
  @type target :: os_pid | pid

  @typedoc "A signal: its number or its name (`:sigterm`, `:sigusr1`, …)."
  @type signal :: non_neg_integer | atom

  @doc """
  Starts `command` as an OS process. See the moduledoc for commands and options.

      iex> Tether.run(["/nonexistent/program"])
      {:error, :enoent}
  """
  @spec run(command, options) :: {:ok, pid, os_pid} | {:error, atom}
  def run(command, options \\ []) do
    {link?, options} = take_link(options)
    spec = Tether.Options.build!(command, options, self())
    Tether.Process.start(spec, link?)
  end

  @doc """
  Like `run/2`, and links the caller to the `Tether.Process`: an exit with a non-zero status
  reaches the caller as an exit signal with the reason of the `:DOWN` message.
  """
  @spec run_link(command, options) :: {:ok, pid, os_pid} | {:error, atom}
  def run_link(command, options \\ []) do
    run(command, [:link | List.wrap(options)])
  end

  # Improper lists and other shapes go through untouched: Tether.Options rejects them.
  defp take_link([:link | rest]), do: take_link(rest) |> then(fn {_, r} -> {true, r} end)

  defp take_link([{:link, flag} | rest]) when is_boolean(flag),
    do: take_link(rest) |> then(fn {_, r} -> {flag, r} end)

  defp take_link([option | rest]) do
    {link?, rest} = take_link(rest)
    {link?, [option | rest]}
  end

  defp take_link(options), do: {false, options}

  @doc """
  Stops an OS process: SIGTERM to its process group, then SIGKILL after its `:kill_timeout`.
  Returns at once; the `:DOWN` follows.

      iex> {:ok, _pid, os_pid} = Tether.run(["sleep", "10"], [:monitor])
      iex> Tether.stop(os_pid)
      :ok
      iex> receive do {:DOWN, ^os_pid, :process, _, reason} -> reason end
      {:signal, :sigterm, false}
      iex> Tether.stop(os_pid)
      {:error, :no_process}
  """
  @spec stop(target) :: :ok | {:error, :no_process}
  def stop(target) do
    with {:ok, os_pid} <- resolve(target), do: Tether.Native.stop(os_pid)
  end

  @doc """
  Sends `signal` to an OS process (to its whole group unless `kill_group: false`).

      iex> {:ok, _pid, os_pid} = Tether.run(["sleep", "10"], [:monitor])
      iex> Tether.kill(os_pid, :sigusr1)
      :ok
      iex> receive do {:DOWN, ^os_pid, :process, _, reason} -> reason end
      {:signal, :sigusr1, false}
  """
  @spec kill(target, signal) :: :ok | {:error, :no_process}
  def kill(target, signal) do
    number = signal_number!(signal)
    with {:ok, os_pid} <- resolve(target), do: Tether.Native.kill(os_pid, number)
  end

  @doc """
  Whether an OS process is `:running`, `:stopping` (after `stop/1`, until it exits) or
  `:stopped` (by job control, e.g. SIGSTOP).

      iex> {:ok, _pid, os_pid} = Tether.run("trap '' TERM; echo ready; sleep 10", [:stdout, kill_timeout: 1])
      iex> receive do {:stdout, ^os_pid, "ready\\n"} -> Tether.status(os_pid) end
      {:status, :running}
      iex> Tether.stop(os_pid)
      :ok
      iex> Tether.status(os_pid)
      {:status, :stopping}
  """
  @spec status(target) :: {:status, :running | :stopping | :stopped} | {:error, :no_process}
  def status(target) do
    with {:ok, os_pid} <- resolve(target), do: Tether.Native.status(os_pid)
  end

  @doc "The os_pids of every live OS process this node manages, ascending."
  @spec which_processes() :: [os_pid]
  def which_processes, do: Tether.Native.which()

  @doc "The os_pid of the OS process that `pid` stands for."
  @spec os_pid(pid) :: {:ok, os_pid} | {:error, :no_process}
  def os_pid(pid) when is_pid(pid), do: Tether.Process.os_pid(pid)
  def os_pid(other), do: raise(ArgumentError, "expected a Tether pid, got: #{inspect(other)}")

  @doc """
  The `Tether.Process` that stands for `os_pid`.

      iex> {:ok, pid, os_pid} = Tether.run(["sleep", "10"])
      iex> Tether.pid(os_pid) == {:ok, pid}
      true
      iex> Tether.kill(os_pid, :sigkill)
      :ok
  """
  @spec pid(os_pid) :: {:ok, pid} | {:error, :no_process}
  def pid(os_pid) do
    with {:ok, os_pid} <- resolve(os_pid), do: Tether.Native.process_of(os_pid)
  end

  @max_os_pid 0x7FFFFFFF

  defp resolve(os_pid) when is_integer(os_pid) and os_pid > 0 and os_pid <= @max_os_pid,
    do: {:ok, os_pid}

  defp resolve(os_pid) when is_integer(os_pid), do: {:error, :no_process}
  defp resolve(pid) when is_pid(pid), do: Tether.Process.os_pid(pid)

  defp resolve(other) do
    raise ArgumentError, "expected an os_pid (integer) or a Tether pid, got: #{inspect(other)}"
  end

  @doc """
  The number of a signal given by number or name.

      iex> Tether.signal_number(:sigterm)
      15
      iex> Tether.signal_number(9)
      9
  """
  @spec signal_number(signal) :: non_neg_integer
  def signal_number(signal), do: signal_number!(signal)

  defp signal_number!(signal) when is_integer(signal) and signal in 0..64, do: signal

  defp signal_number!(signal) when is_atom(signal) and signal not in [nil, true, false] do
    Tether.Native.signal_number(Atom.to_string(signal)) || bad_signal(signal)
  end

  defp signal_number!(signal), do: bad_signal(signal)

  defp bad_signal(signal) do
    raise ArgumentError,
          "invalid signal: #{inspect(signal)} (expected 0..64 or a name like :sigterm)"
  end
end
