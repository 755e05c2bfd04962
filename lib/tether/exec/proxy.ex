defmodule Tether.Exec.Proxy do
  @moduledoc false
  # The pid that `:exec.run/2` returns, as erlexec's light-weight process per OS process.
  #
  # Spawned and linked by the `exec` server; it starts the OS process with `Tether.run/2` (or
  # adopts one with `Tether.manage/2`), so it owns it, and turns Tether's `:DOWN` into
  # erlexec's: the raw wait status (`{exit_status, 256}` for exit code 1), `normal` after a
  # `:exec.stop/1`, `{exit_status, N}` for a 0 exit with `{success_exit_code, N}`,
  # `{exit_status, -1}` for a managed process. It exits with that reason, so a linked caller
  # gets erlexec's exit signal.
  #
  # Groups are Tether's: the child runs with Tether's `kill_group` set as erlexec's, so
  # `:exec.stop/1` of a `kill_group` child reaches its group through Tether's signaller. What a
  # leader that exits on its own leaves in its group (or its cgroup) runs on while the server
  # lives, as erlexec leaves it running, and is stopped with the server; with `kill_group` it is
  # stopped once the leader is gone (erlexec SIGTERMs the group).
  # When the server dies, the proxy leaves; when the caller dies, it leaves too; either way
  # Tether then stops the child (the proxy owned it), and with it what it started.
  #
  # Output goes from Tether straight to its destination; only the `:DOWN` passes here, sent by
  # Tether after the last output, so it still follows every chunk.

  @doc false
  @spec start(map) :: pid
  def start(request), do: spawn_link(fn -> init(request) end)

  defp init(%{server: server, from: from, caller: caller, flags: flags} = request) do
    Process.flag(:trap_exit, true)
    Process.monitor(caller)

    case spawn_child(request) do
      {:ok, os_pid, managed?} ->
        pgid = pgid(os_pid, flags, managed?)
        send(server, {:"$exec_child", self(), os_pid})
        if flags.termios != [], do: set_termios(os_pid, flags.termios)
        if flags.link, do: Process.link(caller)
        GenServer.reply(from, {:ok, self(), os_pid})

        loop(%{
          os_pid: os_pid,
          pgid: pgid,
          server: server,
          caller: caller,
          flags: flags,
          managed: managed?,
          stopping: false
        })

      {:error, reason} ->
        GenServer.reply(from, {:error, reason})
    end
  end

  defp spawn_child(%{kind: {:manage, os_pid}, options: options}) do
    case Tether.manage(os_pid, [{:monitor, true} | options]) do
      {:ok, _pid, os_pid} -> {:ok, os_pid, true}
      {:error, :no_process} -> {:error, :not_found}
      {:error, reason} -> {:error, reason}
    end
  rescue
    error in ArgumentError -> {:error, {:invalid_option, Exception.message(error)}}
  end

  defp spawn_child(%{kind: :run, command: command, options: options} = request) do
    case Tether.run(command, [{:monitor, true}, background_jobs(request) | options]) do
      {:ok, _pid, os_pid} -> {:ok, os_pid, false}
      {:error, errno} when is_atom(errno) -> cannot_execute(command, options, errno)
    end
  rescue
    error in ArgumentError -> {:error, {:invalid_option, Exception.message(error)}}
  end

  # What a child leaves behind when it exits on its own: erlexec leaves it running, with
  # `kill_group` it SIGTERMs the group. Here it lives while the server does (the server owns
  # every `:exec` process; its stop, or the VM's end, stops it), or with `kill_group` it is
  # stopped with the child's stop sequence.
  defp background_jobs(%{server: server, flags: flags}) do
    if flags.kill_group,
      do: {:background_jobs, :stop},
      else: {:background_jobs, {:keep, server}}
  end

  # erlexec forks before it executes: a program that cannot be executed is a real process that
  # writes "Pid N: cannot execute 'X': <strerror>" to its stderr and exits with status 1. Run such
  # a process, with the same output options, so the caller sees erlexec's messages.
  @output_keys [:stdout, :stderr, :stdin, :pty, :pty_echo, :winsz]
  @exec_errors [:enoent, :eacces, :enoexec, :enotdir, :eloop, :enametoolong, :e2big, :etxtbsy]

  defp cannot_execute(command, options, errno) do
    cd = Keyword.get(options, :cd)
    program = Keyword.get(options, :executable, hd(command))

    # perror's format, with the pid of the process that failed, as erlexec's child writes it.
    {script, message} =
      if cd && not File.dir?(cd),
        do: {~S(printf '%s\n' "$1" >&2; exit 1), "Cannot chdir to '#{cd}': #{strerror(:enoent)}"},
        else:
          {~S(printf 'Pid %s: %s\n' "$$" "$1" >&2; exit 1),
           "cannot execute '#{program}': #{strerror(errno)}"}

    if errno in @exec_errors do
      # Tether's options mix atoms (`:stdin`, `:pty_echo`) and pairs: not a keyword list.
      keep = Enum.filter(options, &(option_key(&1) in @output_keys))

      case Tether.run(["/bin/sh", "-c", script, "sh", message], [{:monitor, true} | keep]) do
        {:ok, _pid, os_pid} -> {:ok, os_pid, false}
        {:error, reason} -> {:error, reason}
      end
    else
      {:error, errno}
    end
  end

  defp option_key({key, _value}), do: key
  defp option_key(key), do: key

  defp strerror(:enoent), do: "No such file or directory"
  defp strerror(:eacces), do: "Permission denied"
  defp strerror(:enoexec), do: "Exec format error"
  defp strerror(:enotdir), do: "Not a directory"
  defp strerror(:eloop), do: "Too many levels of symbolic links"
  defp strerror(:enametoolong), do: "File name too long"
  defp strerror(:e2big), do: "Argument list too long"
  defp strerror(:etxtbsy), do: "Text file busy"
  defp strerror(other), do: to_string(:file.format_error(other))

  # The group the child's kill_group addresses: the group it leads, or the one it joined.
  defp pgid(_os_pid, _flags, true), do: nil
  defp pgid(_os_pid, %{group: gid}, false) when is_integer(gid) and gid > 0, do: gid
  defp pgid(os_pid, _flags, false), do: os_pid

  defp set_termios(os_pid, modes) do
    case Tether.Exec.Terminal.set(os_pid, modes) do
      :ok -> :ok
      {:error, _} -> :ok
    end
  end

  defp loop(%{os_pid: os_pid} = state) do
    receive do
      {:"$exec_stop", from, ref} ->
        # Marked before the signal: the exit reason is `normal` once the process was stopped.
        state = %{state | stopping: true}
        send(from, {ref, stop(state)})
        loop(state)

      :"$exec_abandon" ->
        # The caller's timeout passed before the start was answered: it never got this pid.
        # Leaving (unlinked, without a DOWN) makes Tether stop the OS process.
        Process.unlink(state.caller)
        exit(:normal)

      {{from, ref}, :ospid} when is_pid(from) ->
        # erlexec's protocol for exec:ospid/1, which other code speaks too.
        send(from, {ref, os_pid})
        loop(state)

      {:DOWN, ^os_pid, :process, _pid, reason} ->
        reason = reason(reason, state)
        if state.flags.kill_group, do: term_group(state)

        if state.flags.monitor or state.flags.sync,
          do: send(state.caller, {:DOWN, os_pid, :process, self(), reason})

        exit(reason)

      {:EXIT, server, _reason} when server == state.server ->
        # The server is gone, as erlexec's port program: its children go with it.
        if state.flags.monitor or state.flags.sync,
          do: send(state.caller, {:DOWN, os_pid, :process, self(), :port_closed})

        exit(:port_closed)

      {:EXIT, caller, reason} when caller == state.caller ->
        # A linked caller died: leaving makes Tether stop the OS process (we own it).
        exit(if reason in [:normal, :shutdown], do: reason, else: {:owner_died, caller, reason})

      {:DOWN, _ref, :process, caller, _} when caller == state.caller ->
        exit(:normal)

      _ ->
        loop(state)
    end
  end

  # With `kill_group` the child runs with Tether's `kill_group: true`: the stop reaches its group.
  defp stop(state), do: Tether.stop(state.os_pid)

  # erlexec SIGTERMs the group of a `kill_group` child when the child exits. What a leader
  # leaves behind is Tether's to stop; the children of Tether in the group (its leader, the
  # siblings that joined it) are signalled here, one by one and only while Tether runs them.
  defp term_group(%{pgid: pgid}) when is_integer(pgid) do
    for member <- Tether.ProcFs.group_members(pgid), match?({:ok, _}, Tether.pid(member)) do
      Tether.kill(member, :sigterm)
    end

    :ok
  end

  defp term_group(_state), do: :ok

  defp reason(_reason, %{stopping: true}), do: :normal
  defp reason(_reason, %{managed: true}), do: {:exit_status, -1}

  defp reason(:normal, %{flags: %{success_exit_code: code}}) when code != 0,
    do: {:exit_status, code}

  defp reason(reason, _state), do: to_erlexec_reason(reason)

  @doc false
  # Tether's exit reason in erlexec's form: the raw wait status.
  @spec to_erlexec_reason(Tether.Process.reason()) :: :normal | {:exit_status, integer} | atom
  def to_erlexec_reason(:normal), do: :normal
  def to_erlexec_reason({:exit_status, code}), do: {:exit_status, code * 256}

  def to_erlexec_reason({:signal, signal, core?}) do
    number = Tether.Signal.number!(signal)
    {:exit_status, number + if(core?, do: 128, else: 0)}
  end

  def to_erlexec_reason(:unknown), do: {:exit_status, -1}
  def to_erlexec_reason(other), do: other
end
