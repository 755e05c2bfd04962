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

  A list of atoms and `{key, value}` tuples (a keyword list works). Bad options raise
  `ArgumentError` naming the option; nothing is spawned.

  Monitoring and linking:

    * `:monitor` - send one `{:DOWN, os_pid, :process, pid, reason}` to the caller when the OS
      process has exited and all of its output has been delivered.
    * `:link` - link the caller and the `Tether.Process` (see `run_link/2`).
    * `{:success_exit_code, code}` - exit code `code` is reported as `:normal`, like 0.

  Input:

    * `:stdin` - a pipe to write with `send/2`; `send(os_pid, :eof)` closes it.
    * `{:stdin, :null | :close | path}` - `/dev/null` (the default), a closed fd 0, or a file.

  Files named in `:stdin`, `:stdout` and `:stderr` are opened by the child itself, as its user
  (see `:user`), before `:cd` applies; a file it cannot open is reported by `run/2` as an
  exec error is: `{:error, :enoent}`, `{:error, :eacces}`…

  Output (`:stdout` and `:stderr` alike):

    * `:stdout`, `:stderr` - send the stream to the caller.
    * `{:stdout, destination}` - a local pid or `{:send, pid}` (messages), a `fun(stream,
      os_pid, data)` of arity 3 (run by the `Tether.Process`, in order), `:print` (each chunk
      to `Logger.info` with the os_pid), a path (truncated), `{path, [:append, {:mode,
      0o600}]}` (permission bits only: a mode above `0o777`, with setuid, setgid or sticky
      bits, raises `ArgumentError`), `:null` (discard; the default), `:close` (fd closed), or
      the other stream: `{:stderr, :stdout}` sends stderr where stdout goes, interleaved
      exactly as written (`{:stdout, :stderr}` the reverse).

  Environment:

    * `{:env, env}` - changes to the inherited environment, applied in order: `{"NAME", "value"}`
      sets, `{"NAME", false}` (or `nil`) unsets, `:clear` empties the environment.
      `{"NAME", true}` raises `ArgumentError` (it has no value to set).
    * `{:cd, dir}` - the working directory.
    * `{:executable, path}` - the program to execute, when `argv[0]` should be something else.
    * `{:user, name}` - run as that user (its uid, gid and supplementary groups). Needs root;
      otherwise `run/2` returns `{:error, :eperm}` (`{:error, :unknown_user}` for no such user).
      As `runuser` does, `HOME`, `SHELL`, `USER` and `LOGNAME` come from the user's passwd
      entry; `:env` changes apply after them (it may set or unset them, and `:clear` clears
      them too). Its `:stdin`/`:stdout`/`:stderr` files are opened with the user's rights
      (`{:error, :eacces}` where the user may not), and the files it creates are the user's.
    * `{:nice, n}` - the scheduling priority, -20..19.
    * `{:rlimit, [nofile: 1024, as: bytes, cpu: seconds, core: 0]}` - resource limits, each a
      number (soft = hard), `{soft, hard}` or `:infinity`.
    * `{:capabilities, names | :all}` - the Linux capabilities the process runs with, named as
      in `capabilities(7)` without `CAP_` (`[:kill, :net_bind_service]`; `:cap_kill` works
      too): exactly those are its effective, permitted, inheritable and ambient sets, so they
      survive `execve` and pass on to the programs it runs, as root or as a `:user`. A process
      that runs as root also loses the others from its bounding set, so that no setuid program
      gives them back (it still has uid 0: root's files are its own). `[]` is none at all,
      `:all` every capability the VM holds. The VM must hold them, else `run/2` returns
      `{:error, :eperm}`. Without the option a process has what `execve` gives its user: every
      capability as root, none as another user.

  Stopping:

    * `{:kill_timeout, seconds}` - time between the SIGTERM of `stop/1` and SIGKILL. Defaults
      to `5`. `0` kills at once.
    * `{:kill, command}` - stop by running `/bin/sh -c command` with `CHILD_PID` in its
      environment instead of sending SIGTERM; SIGKILL follows after `:kill_timeout`.
    * `{:kill_sequence, [sigint: 2000, sigterm: 3000, sigkill: 0]}` - the stop as data: each
      signal, then the wait (ms) before the next. SIGKILL ends every sequence (added if absent).
    * `{:kill_group, boolean}` - `stop/1` and `kill/2` address the child's whole process group.
      Defaults to `true`; with `false` only the child is signalled.
    * `{:group, 0 | pgid | :inherit}` - the child leads a new group (`0`, the default), joins
      group `pgid`, or stays in the VM's group (then only the child is ever signalled). `pgid`
      must be a group that a live Tether child created: the os_pid of a child started by
      `run/2` (not adopted by `manage/2`) that leads its own group, as when joining a sibling.
      Any other group, the VM's own included, is refused by `run/2` with
      `{:error, :bad_group}` and nothing is spawned; a `pgid` that is not an integer above 1
      raises `ArgumentError`.
    * `{:idle_timeout, ms}` - stop the process once it has written no output for `ms`.
    * `{:max_output, bytes}` - deliver exactly the first `bytes` bytes of output (both of the
      streams Tether reads, those sent to a pid, a fun or `:print`, counted together) and stop
      the process once it has written more: nothing after those bytes is delivered. The
      `:DOWN` reason is then that of the stop, `{:signal, :sigterm, false}` by default
      (`{:signal, :sigkill, false}` for a process that ignores SIGTERM for `:kill_timeout`),
      or the process's own if it had already exited. `info/1` shows `output_capped: true`
      after the exit. A process that writes exactly `bytes` is not stopped.
    * `{:background_jobs, :stop | :keep}` - what happens to what the process started (its
      group's other members, everything in its cgroup) when it exits on its own. `:stop` (the
      default): it is stopped with the process's own stop sequence (SIGTERM, `:kill_timeout`,
      SIGKILL) right after the `:DOWN`. `:keep`: it runs on while the owner lives, and is
      stopped when the owner dies, the application stops or `stop/1` is called with the
      process's os_pid (and killed with the VM). `info/1` shows `background_jobs: :running`
      until it is gone. Children of Tether that joined the group (`{:group, pgid}`) are not
      leftovers: they are spared, and the group's other members are signalled one by one.
    * `{:cgroup_limits, [memory_max: bytes, pids_max: n, cpu_max: {quota_us, period_us}]}` -
      limits for the process's own cgroup (cgroup v2 `memory.max`, `pids.max`, `cpu.max`).
      Where cgroups are off, or the hierarchy does not enable that controller, `run/2`
      returns `{:error, :cgroup_limits_unavailable}`: a limit is never silently ignored.
    * `{:detach, true}` - let the process outlive its owner and the VM on purpose: it is not
      stopped when its owner dies or its `Tether.Process` goes, not stopped when the `:tether`
      application stops, not killed when the VM dies. `stop/1` and `kill/2` still work while the
      VM lives. Defaults to `false`.

  Terminals:

    * `:pty` - run the process on a pseudo-terminal (stdin, and the piped output streams, are
      the terminal; its output arrives as `:stdout`). `{:winsz, {rows, cols}}` sets its size
      (default 24×80; `winsz/3` changes it later), `:pty_echo` turns echo on.

  Flow control (per stream, like gen_tcp's `:active`):

    * `{:active, true}` - push every chunk as it is read (the default).
    * `{:active, :once}` - send one chunk, then go passive; `{:active, n}` - send `n` chunks,
      then go passive. `{:active, [stdout: mode, stderr: mode]}` sets each stream. A passive
      stream is not read: the child blocks on its full pipe instead of the VM filling with
      binaries. Going passive sends `{:tether_passive, os_pid, stream}` to the stream's
      destination; `activate/3` grants more. The `:DOWN` still follows the last chunk: a
      process that exits with output pending waits for it to be taken.
    * Output to a fun or `:print` is flow-controlled by itself: the next chunk is read once
      the handler has returned.

  Other nodes:

    * `{:node, node}` - run the OS process on another node of the cluster that runs Tether
      (also for `cmd/3`, `stream/2`, `stream!/2`, `:sync`). Output and the `:DOWN` reach the
      caller here, in order; the returned `pid` lives on `node`, and `stop/1`, `kill/2`,
      `status/1`, `send/2`, `activate/3`, `winsz/3` and `info/1` accept it from any node. If
      the caller dies or its node disconnects, the OS process is stopped; if `node` goes down,
      the caller gets `{:DOWN, os_pid, :process, pid, {:nodedown, node}}`. Destinations must be
      pids (no funs or `:print`). See `Tether.Remote`.

  Waiting:

    * `:sync` - wait for the exit and return `{:ok, [stdout: chunks, stderr: chunks]}` (the
      streams sent to the caller) on a `:normal` exit, `{:error, [exit_status: code, ...]}`
      (or `exit_signal: name`) otherwise. With `{:timeout, ms}` the process is stopped when the
      time is up and `{:error, :timeout}` is returned.

  ## Messages

  | message | sent to | when |
  |---|---|---|
  | `{:stdout, os_pid, binary}` | the `:stdout` destination | output arrives |
  | `{:stderr, os_pid, binary}` | the `:stderr` destination | output arrives |
  | `{:DOWN, os_pid, :process, pid, reason}` | the caller, with `:monitor` | after the last output |
  | `{:tether_passive, os_pid, stream}` | the stream's destination | a flow-controlled stream goes passive |

  `reason` is `:normal` (exit status 0), `{:exit_status, code}` (1..255),
  `{:signal, name, core_dumped?}` (`{:signal, :sigkill, false}`; real-time signals by number),
  or `:unknown` when the status was lost. `pid` (a `Tether.Process`) exits with the same reason
  (`:normal` for status 0), so monitors and links on it see it too.

  ## Lifetime

  No OS process outlives its owner unless it was started with `{:detach, true}` — and that
  includes everything it starts:

    * each child leads its own process group and, where cgroup v2 is writable (the default
      `config :tether, cgroups: :auto`; see `Tether.Config` and `info/0`), lives in a cgroup of
      its own that it joins before `execve`, so what it starts is born inside: background
      jobs, double forks, `setsid` daemons, processes that change their group;
    * `stop/1` runs the stop sequence on all of it: the child (through its pidfd, even if it
      moved to another group), its group, and every other process in its cgroup (SIGKILL
      through `cgroup.kill`). It always ends in a `:DOWN`;
    * when the child exits on its own, its `:DOWN` comes at once; then what it started is
      stopped the same way (see `{:background_jobs, ...}`);
    * when the process that called `run/2` exits (normally or not), its OS processes are stopped
      like `stop/1` does; so are they when their `Tether.Process` is killed;
    * when the `:tether` application stops (`Application.stop/1`, `System.stop/0`), every OS
      process is stopped, and the stop returns as soon as the last one is gone;
    * when the VM dies, even by SIGKILL or the OOM killer, the kernel kills the direct children
      (`PR_SET_PDEATHSIG`) and a watchdog program (`tether_watchdog`, started by the native
      event loop) sees its socket close, kills this VM's whole cgroup tree and every child's
      group (through the leaders' pidfds). If the watchdog itself is killed, a new one is
      started at once and told everything again. As root it runs with `oom_score_adj` -1000.

  Without cgroups (`cgroups: false`, or a hierarchy that is not writable), what leaves the
  child's process group — a `setsid` daemon, a job that moved to a group of its own (`bash`
  with `set -m`, `setpgid`) — is not found. README's guarantees table lists every case.

  Tether signals only what it started: one guarded function in the native core sends every
  signal, and never to pid 1, to every process (`kill(-1)`), to the VM or to the VM's group.
  A group is signalled through its leader's pidfd (Linux ≥ 6.9), so a recycled group id is
  never hit.

  ## Refusals

  Tether signals only what it started or was explicitly given, and never the VM. Nothing is
  spawned, adopted or signalled when a call is refused:

  | call | result | why |
  |---|---|---|
  | spawning after `Application.stop(:tether)` | `{:error, :not_started}` | nothing could watch it |
  | `run/2` with `{:group, pgid}` no live child leads | `{:error, :bad_group}` | `stop/1` would signal it |
  | `manage(1)` | `{:error, :init_process}` | with `kill_group`: `kill(-1)` |
  | the VM, its `erl_child_setup`, the watchdog | `{:error, :vm_process}` | stopping it kills the VM |
  | an ancestor of the VM | `{:error, :vm_ancestor}` | the VM would go with it |
  | an os_pid Tether already runs | `{:error, :already_managed}` | it has its `Tether.Process` |
  | `kill_group: true`, a process leading no group | `{:error, :not_group_leader}` | the group is not its own |
  | `kill_group: true`, the VM's group leader | `{:error, :vm_group}` | the VM is in that group |

  The `manage/2` rows are `manage/2`'s answers (see it). After `Application.stop(:tether)`,
  `run/2` (also `:sync`, `run_link/2`) and `manage/2` return `{:error, :not_started}`, `cmd/3`
  raises `ErlangError` with it, and a stream raises `Tether.Stream.ExitError` with it.

  Bad arguments to any function of this module (a wrong type, an improper list, an unknown
  option or stream) raise `ArgumentError` naming the argument or option.
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
  @spec run(command, options) ::
          {:ok, pid, os_pid} | {:error, atom} | {:ok, keyword} | {:error, keyword}
  def run(command, options \\ []) do
    case take_node(options) do
      {local, options} when local == node() ->
        spec = Tether.Options.build!(command, options, self())
        if spec.sync, do: run_sync(spec), else: Tether.Process.start(spec)

      {remote, options} ->
        Tether.Remote.run(remote, command, options)
    end
  end

  # `{:node, node}`: where the OS process runs (see Tether.Remote). Absent: this node.
  # Anything but a proper list goes through untouched: Tether.Options rejects it.
  defp take_node([{:node, node} | rest]) when is_atom(node) and node != nil, do: {node, rest}

  defp take_node([{:node, other} | _]),
    do: raise(ArgumentError, "invalid value for :node option: #{inspect(other)}")

  defp take_node([option | rest]) do
    {node, rest} = take_node(rest)
    {node, [option | rest]}
  end

  defp take_node(options), do: {node(), options}

  defp run_sync(spec) do
    # The :DOWN must reach us, through the Tether.Process when it runs output handlers.
    spec = if spec.handlers == %{}, do: %{spec | monitor: self()}, else: %{spec | down_to: self()}
    collect? = fn stream -> spec[stream] == {:pipe, self()} end
    streams = Enum.filter([:stdout, :stderr], collect?)
    deadline = if spec.timeout == :infinity, do: :infinity, else: now() + spec.timeout

    with {:ok, _pid, os_pid} <- Tether.Process.start(spec) do
      collect_sync(os_pid, deadline, Map.new(streams, &{&1, []}))
    end
  end

  defp collect_sync(os_pid, deadline, acc) do
    timeout = if deadline == :infinity, do: :infinity, else: max(deadline - now(), 0)

    receive do
      {stream, ^os_pid, data} when stream in [:stdout, :stderr] ->
        collect_sync(os_pid, deadline, Map.update(acc, stream, [data], &[data | &1]))

      {:DOWN, ^os_pid, :process, _, reason} ->
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
    after
      timeout ->
        stop_after_timeout(os_pid)
        {:error, :timeout}
    end
  end

  # A :sync run or cmd/3 whose time is up: stop the process, wait for its exit, and drop the
  # output that arrived meanwhile, so nothing of it is left in the caller's mailbox.
  defp stop_after_timeout(os_pid) do
    stop(os_pid)
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

  @doc """
  Like `run/2`, and links the caller to the `Tether.Process`: an exit with a non-zero status
  reaches the caller as an exit signal with the reason of the `:DOWN` message.
  """
  @spec run_link(command, options) :: {:ok, pid, os_pid} | {:error, atom}
  def run_link(command, options \\ [])

  def run_link(command, options) when is_list(options), do: run(command, [:link | options])

  def run_link(_command, options) do
    raise ArgumentError, "Tether.run/2 options must be a list, got: #{inspect(options)}"
  end

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
  def stop(pid) when is_pid(pid) and node(pid) != node(), do: Tether.Remote.call(pid, :stop, [])

  def stop(target) do
    with {:ok, os_pid} <- resolve(target) do
      Tether.Trace.event(os_pid, fn -> "Tether stopping #{os_pid}" end)
      Tether.Native.stop(os_pid)
    end
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
  def kill(pid, signal) when is_pid(pid) and node(pid) != node(),
    do: Tether.Remote.call(pid, :kill, [signal])

  def kill(target, signal) do
    number = signal_number!(signal)

    with {:ok, os_pid} <- resolve(target) do
      Tether.Trace.event(os_pid, fn -> "Tether sending signal #{number} to #{os_pid}" end)
      Tether.Native.kill(os_pid, number)
    end
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
  def status(pid) when is_pid(pid) and node(pid) != node(),
    do: Tether.Remote.call(pid, :status, [])

  def status(target) do
    with {:ok, os_pid} <- resolve(target), do: Tether.Native.status(os_pid)
  end

  @doc """
  What Tether knows of an OS process, live or recently exited (the last 1,024 exits):
  `:os_pid`, `:pid`, `:owner`, `:command`, `:started_at` (monotonic ms) and `:started_at_wall`,
  `:status` (`:running`, `:stopping`, `:stopped`, or `{:exited, reason}`), the bytes read per
  stream and written to stdin (`:stdout_bytes`, `:stderr_bytes`, `:stdin_bytes`), and after the
  exit its resource usage as `wait4` reports it: `:user_time_us`, `:system_time_us`,
  `:max_rss` (bytes), with `:exited_at`, and `:output_capped` (whether `:max_output` cut the
  output off).

      iex> {:ok, pid, os_pid} = Tether.run(["echo", "hi"], [:monitor, :stdout])
      iex> receive do {:DOWN, ^os_pid, _, _, _} -> :ok end
      iex> info = Tether.info(os_pid)
      iex> {info.pid == pid, info.status, info.stdout_bytes, is_integer(info.user_time_us)}
      {true, {:exited, :normal}, 3, true}
  """
  @spec info(target) :: map | {:error, :no_process | :not_started}
  def info(pid) when is_pid(pid) and node(pid) != node(), do: Tether.Remote.call(pid, :info, [])

  def info(target) do
    with {:ok, os_pid} <- resolve_any(target) do
      case live_info(os_pid) do
        {:ok, info} -> info
        :error -> exited_info(os_pid) |> with_background(os_pid)
      end
      |> with_wall_clock()
    end
  end

  # After the exit: whether what the process started still runs.
  defp with_background(%{} = info, os_pid) do
    {_unread, background} = Tether.Native.leftovers()
    Map.put(info, :background_jobs, if(os_pid in background, do: :running, else: :none))
  end

  defp with_background(other, _os_pid), do: other

  defp with_wall_clock(%{started_at: started_at} = info) do
    wall = DateTime.from_unix!(started_at + System.time_offset(:millisecond), :millisecond)
    Map.put(info, :started_at_wall, wall)
  end

  defp with_wall_clock(other), do: other

  # The :DOWN can arrive before the Tether.Process has recorded the exit: it exits right after
  # recording, so wait for that.
  defp exited_info(os_pid) do
    case Tether.History.lookup(os_pid) do
      {:ok, %{status: {:exited, _}} = info} ->
        info

      {:ok, %{pid: pid}} ->
        ref = Process.monitor(pid)
        receive do: ({:DOWN, ^ref, :process, ^pid, _} -> :ok), after: (1000 -> :ok)
        with {:ok, info} <- Tether.History.lookup(os_pid), do: info

      error ->
        error
    end
  end

  defp resolve_any(pid) when is_pid(pid) do
    case resolve(pid) do
      {:ok, os_pid} -> {:ok, os_pid}
      _ -> exited_os_pid(pid)
    end
  end

  defp resolve_any(target), do: resolve(target)

  defp exited_os_pid(pid), do: Tether.History.os_pid_of(pid)

  defp live_info(os_pid) do
    ref = make_ref()

    with {:ok, pid} <- Tether.Native.process_of(os_pid),
         started when is_map(started) <- Tether.Process.live_info(pid),
         {:status, status} <- Tether.Native.status(os_pid),
         :ok <- Tether.Native.counters(os_pid, self(), ref) do
      receive do
        {:tether_counters, ^ref, counters} ->
          {:ok,
           started
           |> Map.merge(counters || %{})
           |> Map.merge(%{os_pid: os_pid, pid: pid, status: status})}
      after
        5000 -> :error
      end
    else
      _ -> :error
    end
  end

  @doc """
  Node-wide counts, for a dashboard or a health check: `:live` (running OS processes: what
  counts toward `max_children`), `:unread` (exited, with output a passive stream has not
  taken yet), `:background` (exited, and what they started still runs: see
  `{:background_jobs, ...}`), and since the application started, `:spawned`, `:exited` and
  `:spawn_errors`. `:cgroups` is `{:on, directory}` when every child gets its own cgroup, or
  `{:off, reason}`.
  """
  @spec info() :: %{
          live: non_neg_integer,
          unread: non_neg_integer,
          background: non_neg_integer,
          cgroups: {:on, String.t()} | {:off, String.t()},
          spawned: non_neg_integer,
          exited: non_neg_integer,
          spawn_errors: non_neg_integer
        }
  def info do
    {unread, background} = Tether.Native.leftovers()

    cgroups =
      case Tether.Native.cgroups() do
        {:ok, path} -> {:on, path}
        {:error, reason} -> {:off, reason}
      end

    Map.merge(Tether.History.totals(), %{
      live: Tether.Native.count(),
      unread: unread,
      background: length(background),
      cgroups: cgroups
    })
  end

  @doc "The os_pids of every live OS process this node manages, ascending."
  @spec which_processes() :: [os_pid]
  def which_processes, do: Tether.Native.which()

  @doc "The os_pid of the OS process that `pid` stands for."
  @spec os_pid(pid) :: {:ok, os_pid} | {:error, :no_process}
  def os_pid(pid) when is_pid(pid) and node(pid) != node(),
    do: Tether.Remote.call(pid, :os_pid, [])

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

  @doc """
  Writes `data` (iodata) to the stdin of a process started with `:stdin`, or closes its stdin
  with `:eof` once everything queued before is written. Never blocks: data waits in the native
  event loop until the pipe takes it, in order, whatever its size.

      iex> {:ok, _pid, os_pid} = Tether.run("cat; sleep 10", [:stdin, :stdout])
      iex> Tether.send(os_pid, ["hello", ?\\s, "world"])
      :ok
      iex> Tether.send(os_pid, :eof)
      :ok
      iex> receive do {:stdout, ^os_pid, data} -> data end
      "hello world"
      iex> Tether.send(os_pid, "more")
      {:error, :closed}
      iex> Tether.kill(os_pid, :sigkill)
      :ok
  """
  @spec send(target, iodata | :eof) :: :ok | {:error, :no_process | :closed}
  def send(pid, data) when is_pid(pid) and node(pid) != node(),
    do: Tether.Remote.call(pid, :send, [data])

  def send(target, :eof) do
    with {:ok, os_pid} <- resolve(target), do: Tether.Native.close_stdin(os_pid)
  end

  def send(target, data) when is_binary(data) or is_list(data) do
    binary =
      try do
        IO.iodata_to_binary(data)
      rescue
        ArgumentError -> raise ArgumentError, "expected iodata or :eof, got: #{inspect(data)}"
      end

    with {:ok, os_pid} <- resolve(target), do: Tether.Native.write(os_pid, binary)
  end

  def send(_target, data) do
    raise ArgumentError, "expected iodata or :eof, got: #{inspect(data)}"
  end

  @doc """
  Waits until everything sent to the process's stdin so far is written to its pipe, so that a
  producer does not run ahead of the process. `{:error, :closed}` when the stdin closes (or the
  process exits) before all of it could be written.

      iex> {:ok, _pid, os_pid} = Tether.run(["cat"], [:stdin, :stdout])
      iex> :ok = Tether.send(os_pid, :binary.copy("x", 5_000_000))
      iex> Tether.flush_stdin(os_pid)
      :ok
      iex> Tether.kill(os_pid, :sigkill)
      :ok
  """
  @spec flush_stdin(target, timeout) :: :ok | {:error, :no_process | :closed | :timeout}
  def flush_stdin(target, timeout \\ :infinity)

  def flush_stdin(pid, timeout) when is_pid(pid) and node(pid) != node(),
    do: Tether.Remote.call(pid, :flush_stdin, [timeout])

  def flush_stdin(target, timeout)
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

  def flush_stdin(_target, timeout) do
    raise ArgumentError, "expected a timeout (ms or :infinity), got: #{inspect(timeout)}"
  end

  @doc "Sets the window size of a process started with `:pty` (it gets SIGWINCH)."
  @spec winsz(target, pos_integer, pos_integer) :: :ok | {:error, :no_process}
  def winsz(pid, rows, cols) when is_pid(pid) and node(pid) != node(),
    do: Tether.Remote.call(pid, :winsz, [rows, cols])

  def winsz(target, rows, cols) when rows in 1..65_535 and cols in 1..65_535 do
    with {:ok, os_pid} <- resolve(target), do: Tether.Native.winsz(os_pid, rows, cols)
  end

  def winsz(_target, rows, cols) do
    raise ArgumentError, "invalid window size: #{inspect({rows, cols})} (expected 1..65535 each)"
  end

  @doc """
  Grants more output to flow-controlled streams (see `{:active, mode}`): `:once` (one more
  chunk), a count of chunks, or `true` (read freely again). `stream` is `:stdout`, `:stderr` or
  `:all` (the default).

      iex> {:ok, _pid, os_pid} = Tether.run("echo one; sleep 0.2; echo two", [:stdout, :monitor, active: :once])
      iex> receive do {:stdout, ^os_pid, data} -> data end
      "one\\n"
      iex> receive do {:tether_passive, ^os_pid, :stdout} -> :passive end
      :passive
      iex> Tether.activate(os_pid, true)
      :ok
      iex> receive do {:stdout, ^os_pid, data} -> data end
      "two\\n"
  """
  @spec activate(target, true | :once | non_neg_integer, :stdout | :stderr | :all) ::
          :ok | {:error, :no_process}
  def activate(target, mode, stream \\ :all)

  def activate(pid, mode, stream) when is_pid(pid) and node(pid) != node(),
    do: Tether.Remote.call(pid, :activate, [mode, stream])

  def activate(target, mode, stream) when stream in [:stdout, :stderr, :all] do
    credit =
      case Tether.Options.active!(mode) do
        true -> nil
        :once -> 1
        n -> n
      end

    stream = if stream == :all, do: nil, else: stream
    with {:ok, os_pid} <- resolve(target), do: Tether.Native.activate(os_pid, stream, credit)
  end

  def activate(_target, _mode, stream) do
    raise ArgumentError,
          "invalid stream for Tether.activate/3: #{inspect(stream)} " <>
            "(expected :stdout, :stderr or :all)"
  end

  @doc """
  Runs `command` and returns an Enumerable of its stdout chunks, read only on demand (the
  process is flow-controlled: it blocks while nobody asks). The process starts when the stream
  is first consumed, owned by the consuming process. Halting early (`Enum.take/2`) stops it.
  Ends with `{:exit, reason}` as its last element. Options: those of `run/2` (not `:stdout`,
  `:monitor`), plus `:input` (iodata or an Enumerable written to stdin, then EOF). An
  Enumerable input is pulled by a linked process at the pace the command reads it (at most
  1 MiB waits in the stdin queue, see `flush_stdin/2`), so it may be endless.

      iex> Tether.stream(["seq", "1", "3"]) |> Enum.to_list() |> List.last()
      {:exit, :normal}
  """
  @spec stream(command, keyword) :: Enumerable.t()
  def stream(command, options \\ []), do: Tether.Stream.new(command, options, false)

  @doc """
  Like `stream/2`, but yields only the chunks and raises `Tether.Stream.ExitError` at the end when the
  process did not exit with status 0.

      iex> Tether.stream!(["seq", "1", "3"]) |> Enum.join()
      "1\\n2\\n3\\n"
      iex> Tether.stream!(["sh", "-c", "yes | head -c 1000000"]) |> Enum.take(1) |> length()
      1
  """
  @spec stream!(command, keyword) :: Enumerable.t()
  def stream!(command, options \\ []), do: Tether.Stream.new(command, options, true)

  @manage_options [:monitor, :link, :kill_timeout, :kill, :kill_sequence, :kill_group, :detach] ++
                    [:success_exit_code]

  @doc """
  Adopts an OS process started elsewhere: it gets a `Tether.Process`, can be monitored,
  stopped and killed, and is stopped when the caller dies, like a process of `run/2`. Its exit
  status cannot be known (it is not our child): its reason is `:unknown`.

  Options: `:monitor`, `:link`, `:kill_timeout`, `:kill`, `:kill_sequence`, `:detach`, and
  `:kill_group` (defaults to `false` here: the process may not lead a group of its own).
  Anything else raises `ArgumentError`.

  Tether only adopts what it may signal without harming the node. It refuses, adopting
  nothing and signalling nothing:

    * `{:error, :init_process}` - pid 1;
    * `{:error, :vm_process}` - the VM itself (`System.pid/0`), its `erl_child_setup` helper,
      or Tether's watchdog;
    * `{:error, :vm_ancestor}` - a process the VM descends from (its parent, … up to pid 1):
      stopping it would take the VM with it;
    * `{:error, :already_managed}` - an os_pid Tether already runs or manages (use the pid
      `run/2` returned);
    * `{:error, :not_group_leader}` - `kill_group: true` for a process that does not lead its
      process group (its pgid is not its pid): its group is not its own to signal;
    * `{:error, :vm_group}` - `kill_group: true` for the leader of the VM's own process group;
    * `{:error, :no_process}` - no such process, an exited one, or the id of a thread;
    * `{:error, :not_started}` - the `:tether` application does not run.

      iex> port = Port.open({:spawn_executable, System.find_executable("sleep")}, args: ["10"])
      iex> {:os_pid, os_pid} = Port.info(port, :os_pid)
      iex> {:ok, _pid, ^os_pid} = Tether.manage(os_pid, [:monitor])
      iex> Tether.kill(os_pid, :sigkill)
      :ok
      iex> receive do {:DOWN, ^os_pid, :process, _, reason} -> reason end
      :unknown
  """
  @spec manage(os_pid, options) :: {:ok, pid, os_pid} | {:error, atom}
  def manage(os_pid, options \\ [])

  def manage(os_pid, options) when is_integer(os_pid) and is_list(options) do
    Tether.Options.proper_list?(options) or
      raise ArgumentError,
            "Tether.manage/2 options must be a proper list, got: #{inspect(options)}"

    Enum.each(options, fn option ->
      key = if is_tuple(option) and tuple_size(option) > 0, do: elem(option, 0), else: option

      key in @manage_options or
        raise ArgumentError, "option #{inspect(option)} is not supported by Tether.manage/2"
    end)

    spec = Tether.Options.build!(["managed"], [kill_group: false] ++ options, self())

    with {:ok, os_pid} <- resolve(os_pid),
         :ok <- started(),
         :ok <- Tether.Guard.check_manage(os_pid, spec.kill_group) do
      case Tether.Process.start(spec, adopt: os_pid) do
        {:error, :esrch} -> {:error, :no_process}
        other -> other
      end
    end
  end

  def manage(os_pid, options) when is_integer(os_pid) do
    raise ArgumentError, "Tether.manage/2 options must be a list, got: #{inspect(options)}"
  end

  def manage(other, _options) do
    raise ArgumentError, "Tether.manage/2 expects an os_pid (integer), got: #{inspect(other)}"
  end

  defp started, do: if(Tether.Guard.started?(), do: :ok, else: {:error, :not_started})

  @doc """
  A drop-in for `System.cmd/3` that never leaves its process behind: returns
  `{collectable, exit_status}`. Options: `:into` (default `""`), `:cd`, `:env`, `:arg0`,
  `:stderr_to_stdout`, `:parallelism` (accepted, unused), plus `:input` (iodata or an
  Enumerable of iodata, written to stdin, then EOF) and `:timeout` (positive ms or
  `:infinity`; the process is stopped and `{collectable, :timeout}` returned). Every option is
  checked before anything runs: a bad one raises `ArgumentError` naming it. A program that
  cannot run raises `ErlangError` (`:enoent`…, or `:not_started` when the `:tether`
  application does not run), as `System.cmd/3` does. Without `:stderr_to_stdout`, stderr
  goes to the VM's stderr, as with `System.cmd/3`. A signal death gives `128 + signal`, as a
  shell does.

      iex> Tether.cmd("echo", ["hello"])
      {"hello\\n", 0}
      iex> Tether.cmd("sh", ["-c", "cat; exit 3"], input: ["a", "b"])
      {"ab", 3}
      iex> Tether.cmd("sh", ["-c", "echo out; echo err >&2"], stderr_to_stdout: true)
      {"out\\nerr\\n", 0}
  """
  @spec cmd(binary, [binary], keyword) :: {Collectable.t(), non_neg_integer | :timeout}
  def cmd(command, args, options \\ [])

  def cmd(command, args, options)
      when is_binary(command) and is_list(args) and is_list(options) do
    Tether.Options.proper_list?(options) or
      raise ArgumentError, "Tether.cmd/3 options must be a proper list, got: #{inspect(options)}"

    Enum.each(options, &cmd_option!/1)
    {into, options} = Keyword.pop(options, :into, "")
    {input, options} = Keyword.pop(options, :input)
    {timeout, options} = Keyword.pop(options, :timeout, :infinity)
    {stderr_to_stdout, options} = Keyword.pop(options, :stderr_to_stdout, false)
    {arg0, options} = Keyword.pop(options, :arg0)
    {_parallelism, options} = Keyword.pop(options, :parallelism)

    # On another node the program is searched on that node's PATH.
    remote? = Keyword.get(options, :node, node()) != node()

    program =
      cond do
        remote? or String.contains?(command, "/") -> command
        true -> System.find_executable(command) || raise(ErlangError, original: :enoent)
      end

    argv = [arg0 || command | args]

    run_options =
      [
        :stdout,
        :monitor,
        executable: program,
        stderr: if(stderr_to_stdout, do: :stdout, else: :inherit)
      ] ++
        if(input, do: [:stdin], else: []) ++ options

    # Before the spawn: a collectable that cannot be opened leaves no process behind.
    {acc, collector} = Collectable.into(into)

    {:ok, _pid, os_pid} =
      case run(argv, run_options) do
        {:ok, _, _} = ok ->
          ok

        {:error, reason} ->
          collector.(acc, :halt)
          raise ErlangError, original: reason
      end

    if input, do: Tether.Stream.feed(os_pid, input)
    deadline = if timeout == :infinity, do: :infinity, else: now() + timeout
    collect_cmd(os_pid, deadline, acc, collector)
  end

  def cmd(command, args, options) do
    raise ArgumentError,
          "Tether.cmd/3 expects a program (string), a list of string arguments and a " <>
            "keyword list of options, got: #{inspect(command)}, #{inspect(args)}, " <>
            inspect(options)
  end

  # Checks every option of cmd/3 before anything runs (:cd, :env and :node are checked by
  # run/2, also before the spawn).
  defp cmd_option!({:into, into}) do
    Collectable.impl_for(into) != nil or cmd_bad!(:into, into, "a Collectable")
  end

  defp cmd_option!({:input, input}) do
    Tether.Options.input?(input) or cmd_bad!(:input, input, "iodata or an Enumerable of iodata")
  end

  defp cmd_option!({:timeout, timeout}) do
    timeout == :infinity or (is_integer(timeout) and timeout > 0 and timeout <= 4_294_967_296) or
      cmd_bad!(:timeout, timeout, "positive milliseconds or :infinity")
  end

  defp cmd_option!({key, flag}) when key in [:stderr_to_stdout, :parallelism] do
    is_boolean(flag) or cmd_bad!(key, flag, "a boolean")
  end

  defp cmd_option!({:arg0, arg0}) do
    (is_binary(arg0) and arg0 != "") or cmd_bad!(:arg0, arg0, "a non-empty string")
  end

  defp cmd_option!({key, _}) when key in [:cd, :env, :node], do: true

  defp cmd_option!({key, _}) when is_atom(key),
    do: raise(ArgumentError, "unknown option #{inspect(key)} for Tether.cmd/3")

  defp cmd_option!(other),
    do: raise(ArgumentError, "invalid entry #{inspect(other)} in Tether.cmd/3 options")

  defp cmd_bad!(key, value, expected) do
    raise ArgumentError,
          "invalid value for #{inspect(key)} option of Tether.cmd/3: #{inspect(value)} " <>
            "(expected #{expected})"
  end

  defp collect_cmd(os_pid, deadline, acc, collector) do
    timeout = if deadline == :infinity, do: :infinity, else: max(deadline - now(), 0)

    receive do
      {:stdout, ^os_pid, data} ->
        collect_cmd(os_pid, deadline, collector.(acc, {:cont, data}), collector)

      {:DOWN, ^os_pid, :process, _, reason} ->
        {collector.(acc, :done), exit_code(reason)}
    after
      timeout ->
        stop_after_timeout(os_pid)
        {collector.(acc, :done), :timeout}
    end
  end

  defp exit_code(:normal), do: 0
  defp exit_code({:exit_status, code}), do: code
  defp exit_code({:signal, signal, _}), do: 128 + signal_number(signal)
  defp exit_code(_), do: 255

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
