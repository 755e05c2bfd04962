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
    * `{:background_jobs, :stop | :keep | {:keep, pid}}` - what happens to what the process
      started (its group's other members, everything in its cgroup) when it exits on its own.
      `:stop` (the default): it is stopped with the process's own stop sequence (SIGTERM,
      `:kill_timeout`, SIGKILL) right after the `:DOWN`. `:keep`: it runs on while the owner
      lives, and is stopped when the owner dies, the application stops or `stop/1` is called
      with the process's os_pid (and killed with the VM). `{:keep, pid}`: the same, with the
      local process `pid` in the owner's place for this (the `:exec` layer keeps what its
      children leave behind while its server runs, as erlexec does). `info/1` shows `background_jobs: :running`
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
      pids (no funs or `:print`).

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

  @typedoc "A signal: its number or its name (`:sigterm`, `:sigusr1`, …)."
  @type signal :: non_neg_integer | atom

  @typedoc "An OS process: its os_pid or the pid of its `Tether.Process`."
  @type target :: os_pid | pid

  @typedoc "Where an output stream goes (see Output in the moduledoc)."
  @type destination ::
          pid
          | {:send, pid}
          | (:stdout | :stderr, os_pid, binary -> any)
          | :print
          | Path.t()
          | {Path.t(), [:append | {:append, boolean} | {:mode, 0..0o777}]}
          | :null
          | :close
          | :inherit
          | :stdout
          | :stderr

  @typedoc "A flow-control mode (see `{:active, mode}`)."
  @type active_mode :: true | :once | non_neg_integer

  @typedoc "A resource limit: soft = hard, `{soft, hard}`, or `:infinity`."
  @type rlimit_value ::
          non_neg_integer | :infinity | {non_neg_integer | :infinity, non_neg_integer | :infinity}

  @typedoc "One option of `run/2` (see the moduledoc)."
  @type option ::
          :monitor
          | {:monitor, boolean}
          | :link
          | {:link, boolean}
          | {:success_exit_code, 0..255}
          | :stdin
          | {:stdin, true | :pipe | :null | :close | Path.t()}
          | :stdout
          | {:stdout, destination}
          | :stderr
          | {:stderr, destination}
          | {:env,
             [{String.t() | atom | charlist, String.t() | charlist | atom | nil | false} | :clear]
             | map}
          | {:cd, Path.t()}
          | {:executable, Path.t()}
          | {:user, String.t() | atom | charlist}
          | {:nice, -20..19}
          | {:rlimit, [{atom, rlimit_value}]}
          | {:kill_timeout, number}
          | {:kill, String.t()}
          | {:kill_sequence, [{signal, non_neg_integer}, ...]}
          | :kill_group
          | {:kill_group, boolean}
          | {:group, 0 | pos_integer | :inherit}
          | {:idle_timeout, pos_integer}
          | {:max_output, pos_integer}
          | {:background_jobs, :stop | :keep | {:keep, pid}}
          | {:cgroup_limits,
             [memory_max: pos_integer, pids_max: pos_integer, cpu_max: {pos_integer, pos_integer}]}
          | :detach
          | {:detach, boolean}
          | :pty
          | {:pty, boolean}
          | {:winsz, {1..65_535, 1..65_535}}
          | :pty_echo
          | {:pty_echo, boolean}
          | {:active, active_mode | [stdout: active_mode, stderr: active_mode]}
          | {:node, node}
          | :sync
          | {:sync, boolean}
          | {:timeout, pos_integer | :infinity}

  @typedoc "The options of `run/2`: a list of `t:option/0`."
  @type options :: [option]

  @typedoc "One option of `stream/2`: those of `run/2` (not `:stdout`, `:monitor`, `:active`, `:sync`), and `:input`."
  @type stream_option :: option | {:input, iodata | Enumerable.t()}

  @typedoc "One option of `cmd/3`."
  @type cmd_option ::
          {:into, Collectable.t()}
          | {:cd, Path.t()}
          | {:env, [{String.t(), String.t() | nil | false}] | map}
          | {:arg0, String.t()}
          | {:stderr_to_stdout, boolean}
          | {:parallelism, boolean}
          | {:input, iodata | Enumerable.t()}
          | {:timeout, pos_integer | :infinity}
          | {:node, node}

  @typedoc "One option of `manage/2`."
  @type manage_option ::
          :monitor
          | {:monitor, boolean}
          | :link
          | {:link, boolean}
          | {:kill_timeout, number}
          | {:kill, String.t()}
          | {:kill_sequence, [{signal, non_neg_integer}, ...]}
          | :kill_group
          | {:kill_group, boolean}
          | :detach
          | {:detach, boolean}
          | {:success_exit_code, 0..255}

  @doc """
  Starts `command` as an OS process. See the moduledoc for commands and options.

      iex> Tether.run(["/nonexistent/program"])
      {:error, :enoent}
  """
  @spec run(command, options) ::
          {:ok, pid, os_pid} | {:error, atom} | {:ok, keyword} | {:error, keyword}
  def run(command, options \\ []), do: Tether.Run.run(command, options)

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
  defdelegate stop(target), to: Tether.Control

  @doc """
  Sends `signal` to an OS process (to its whole group unless `kill_group: false`).

      iex> {:ok, _pid, os_pid} = Tether.run(["sleep", "10"], [:monitor])
      iex> Tether.kill(os_pid, :sigusr1)
      :ok
      iex> receive do {:DOWN, ^os_pid, :process, _, reason} -> reason end
      {:signal, :sigusr1, false}
  """
  @spec kill(target, signal) :: :ok | {:error, :no_process}
  defdelegate kill(target, signal), to: Tether.Control

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
  defdelegate status(target), to: Tether.Control

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
  defdelegate info(target), to: Tether.Info

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
  defdelegate info(), to: Tether.Info

  @doc "The os_pids of every live OS process this node manages, ascending."
  @spec which_processes() :: [os_pid]
  def which_processes, do: Tether.Native.which()

  @doc "The os_pid of the OS process that `pid` stands for."
  @spec os_pid(pid) :: {:ok, os_pid} | {:error, :no_process}
  defdelegate os_pid(pid), to: Tether.Control

  @doc """
  The `Tether.Process` that stands for `os_pid`.

      iex> {:ok, pid, os_pid} = Tether.run(["sleep", "10"])
      iex> Tether.pid(os_pid) == {:ok, pid}
      true
      iex> Tether.kill(os_pid, :sigkill)
      :ok
  """
  @spec pid(os_pid) :: {:ok, pid} | {:error, :no_process}
  defdelegate pid(os_pid), to: Tether.Control

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
  defdelegate send(target, data), to: Tether.Control

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
  def flush_stdin(target, timeout \\ :infinity), do: Tether.Control.flush_stdin(target, timeout)

  @doc "Sets the window size of a process started with `:pty` (it gets SIGWINCH)."
  @spec winsz(target, pos_integer, pos_integer) :: :ok | {:error, :no_process}
  defdelegate winsz(target, rows, cols), to: Tether.Control

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
  @spec activate(target, active_mode, :stdout | :stderr | :all) :: :ok | {:error, :no_process}
  def activate(target, mode, stream \\ :all), do: Tether.Control.activate(target, mode, stream)

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
  @spec stream(command, [stream_option]) :: Enumerable.t()
  def stream(command, options \\ []), do: Tether.Stream.new(command, options, false)

  @doc """
  Like `stream/2`, but yields only the chunks and raises `Tether.Stream.ExitError` at the end when the
  process did not exit with status 0.

      iex> Tether.stream!(["seq", "1", "3"]) |> Enum.join()
      "1\\n2\\n3\\n"
      iex> Tether.stream!(["sh", "-c", "yes | head -c 1000000"]) |> Enum.take(1) |> length()
      1
  """
  @spec stream!(command, [stream_option]) :: Enumerable.t()
  def stream!(command, options \\ []), do: Tether.Stream.new(command, options, true)

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
  @spec manage(os_pid, [manage_option]) :: {:ok, pid, os_pid} | {:error, atom}
  def manage(os_pid, options \\ []), do: Tether.Run.manage(os_pid, options)

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
  @spec cmd(binary, [binary], [cmd_option]) :: {Collectable.t(), non_neg_integer | :timeout}
  def cmd(command, args, options \\ []), do: Tether.Cmd.cmd(command, args, options)

  @doc """
  The number of a signal given by number or name.

      iex> Tether.signal_number(:sigterm)
      15
      iex> Tether.signal_number(9)
      9
  """
  @spec signal_number(signal) :: 0..64
  defdelegate signal_number(signal), to: Tether.Signal, as: :number!
end
