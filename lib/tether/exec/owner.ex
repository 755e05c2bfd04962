defmodule Tether.Exec.Owner do
  @moduledoc false
  # The `exec` server: the GenServer registered as `exec` (by `:exec.start/1`, `start_link/1`
  # or first use) that owns the `:exec` layer's OS processes, as erlexec's `exec` server does.
  # `:exec` is its API; the requests (`{:run, ...}`, `{:stop, target}`, `{:pid, os_pid}`,
  # `:which_children`...) are made there. Each OS process belongs to a proxy
  # (`Tether.Exec.Proxy`), spawned and linked here; the state maps os_pids and proxies both
  # ways. When the server stops, each child is stopped and waited for, with what it left.
  use GenServer

  alias Tether.Exec.{Options, Proxy}

  @impl true
  def init(options) do
    Process.flag(:trap_exit, true)
    {:ok, parsed} = Options.start_options(options)

    case effective_user(parsed) do
      {:ok, user} ->
        {:ok,
         %{
           user: user,
           limit_users: parsed.limit_users,
           # What children may hold (see capabilities/3): the VM's, within the start option's.
           capabilities: Bitwise.band(held_capabilities(), parsed.capabilities || -1),
           capabilities_limited: parsed.capabilities != nil,
           root: current_uid() == 0,
           env: parsed.env,
           debug: parsed.debug,
           # os_pid => %{proxy: proxy}; proxy => os_pid
           children: %{},
           proxies: %{},
           # ref => proxy: the starts a caller may abandon (its timeout passed)
           starts: %{},
           # proxy => from: the starts not answered yet (a proxy that dies first is answered
           # for, so no caller waits for a reply that cannot come)
           pending: %{}
         }}

      {:error, reason} ->
        {:stop, reason}
    end
  end

  # With `root`, children run as `{user, U}` (erlexec's port program switches its effective
  # user to U). The VM must be able to switch: it runs as root, or as U itself.
  defp effective_user(%{root: true, user: user}) do
    current = System.get_env("USER") || current_user()

    cond do
      user == current -> {:ok, nil}
      user == "root" and current_uid() == 0 -> {:ok, nil}
      current_uid() == 0 -> {:ok, user}
      true -> {:error, ~c"Cannot switch to effective user #{user}: the VM does not run as root"}
    end
  end

  defp effective_user(_parsed), do: {:ok, nil}

  defp current_uid do
    case File.read("/proc/self/status") do
      {:ok, status} ->
        case Regex.run(~r/^Uid:\s+\d+\s+(\d+)/m, status) do
          [_, euid] -> String.to_integer(euid)
          nil -> -1
        end

      {:error, _} ->
        -1
    end
  end

  defp current_user do
    uid = Integer.to_string(current_uid())

    with {:ok, passwd} <- File.read("/etc/passwd"),
         [name | _] <-
           passwd
           |> String.split("\n")
           |> Enum.map(&String.split(&1, ":"))
           |> Enum.find_value([], fn
             [name, _, ^uid | _] -> [name]
             _ -> nil
           end) do
      name
    else
      _ -> nil
    end
  end

  @impl true
  def handle_call({:run, command, options, flags, caller, ref}, from, state) do
    case run_user(flags.user, state) do
      {:ok, user} ->
        options =
          [kill_group: flags.kill_group] ++
            if(user, do: [user: user], else: []) ++
            capabilities(flags.capabilities, user, state) ++ with_env(options, state.env)

        proxy =
          Proxy.start(%{
            kind: :run,
            server: self(),
            from: from,
            caller: caller,
            command: command,
            options: options,
            flags: flags
          })

        {:noreply, starting(state, ref, proxy, from)}

      {:error, _} = error ->
        {:reply, error, state}
    end
  end

  def handle_call({:manage, os_pid, options, flags, caller, ref}, from, state) do
    proxy =
      Proxy.start(%{
        kind: {:manage, os_pid},
        server: self(),
        from: from,
        caller: caller,
        options: options,
        flags: flags
      })

    {:noreply, starting(state, ref, proxy, from)}
  end

  def handle_call({:stop, target}, _from, state) do
    reply =
      with {:ok, proxy} <- proxy(target, state, ~c"pid not alive") do
        ref = make_ref()
        Kernel.send(proxy, {:"$exec_stop", self(), ref})

        receive do
          {^ref, :ok} -> :ok
          {^ref, {:error, :no_process}} -> {:error, ~c"pid not alive"}
        after
          5000 -> {:error, :timeout}
        end
      end

    {:reply, reply, state}
  end

  def handle_call({:kill, target, signal}, _from, state) do
    reply =
      cond do
        target == -1 ->
          {:error, :badarg}

        is_integer(target) and target < 0 ->
          {:error, ~c"Not allowed to send signal to all processes"}

        true ->
          with {:ok, proxy} <-
                 proxy(target, state, ~c"Cannot kill a pid not managed by this application") do
            case Tether.kill(state.proxies[proxy], signal) do
              :ok -> :ok
              {:error, :no_process} -> {:error, :esrch}
            end
          end
      end

    {:reply, reply, state}
  end

  def handle_call({:ospid, proxy}, _from, state) do
    {:reply, Map.get(state.proxies, proxy), state}
  end

  def handle_call({:pid, os_pid}, _from, state) do
    reply =
      case state.children do
        %{^os_pid => %{proxy: proxy}} -> proxy
        _ -> :undefined
      end

    {:reply, reply, state}
  end

  def handle_call(:which_children, _from, state),
    do: {:reply, state.children |> Map.keys() |> Enum.sort(), state}

  def handle_call({:debug, level}, _from, state),
    do: {:reply, {:ok, state.debug}, %{state | debug: level}}

  defp proxy(os_pid, state, unknown) when is_integer(os_pid) do
    case state.children do
      %{^os_pid => %{proxy: proxy}} -> {:ok, proxy}
      _ -> {:error, unknown}
    end
  end

  defp proxy(pid, state, _unknown) when is_pid(pid) do
    if Map.has_key?(state.proxies, pid), do: {:ok, pid}, else: {:error, :no_process}
  end

  # The user a run's child runs as: `{user, U}` only if U is one of `limit_users` (never
  # without `root`), else the effective user.
  defp run_user(nil, state), do: {:ok, state.user}

  defp run_user(user, state) do
    if user in state.limit_users,
      do: {:ok, if(user == current_user(), do: nil, else: user)},
      else:
        {:error,
         :lists.flatten(:io_lib.format(~c"User ~s is not allowed to run commands!", [user]))}
  end

  # erlexec's children inherit the capabilities of its port program, which holds those of
  # `{capabilities, Caps}` (all of its own without): a run gets those it asks for that the port
  # holds (`all`: every one), as its effective, permitted and ambient sets. Here the VM stands
  # in for the port program: a run gets what it asks for of what the VM holds, within the start
  # option's; and a child that runs as root, which would otherwise hold every capability, holds
  # no more than the start option's.
  defp capabilities(nil, user, state) do
    root_child? = if user, do: user == "root", else: state.root

    if state.capabilities_limited and root_child?,
      do: [capabilities: Tether.Options.capability_names(state.capabilities)],
      else: []
  end

  defp capabilities(:all, _user, state),
    do: [capabilities: Tether.Options.capability_names(state.capabilities)]

  defp capabilities(mask, _user, state),
    do: [capabilities: Tether.Options.capability_names(Bitwise.band(mask, state.capabilities))]

  # The capabilities the VM holds and may pass on (permitted, within its bounding set).
  defp held_capabilities do
    with {:ok, status} <- File.read("/proc/self/status"),
         [_, permitted] <- Regex.run(~r/^CapPrm:\s+([0-9a-f]+)/m, status),
         [_, bounding] <- Regex.run(~r/^CapBnd:\s+([0-9a-f]+)/m, status) do
      Bitwise.band(String.to_integer(permitted, 16), String.to_integer(bounding, 16))
    else
      _ -> 0
    end
  end

  defp starting(state, ref, proxy, from) do
    %{
      state
      | starts: Map.put(state.starts, ref, proxy),
        pending: Map.put(state.pending, proxy, from)
    }
  end

  defp with_env(options, []), do: options

  defp with_env(options, env) do
    {own, options} = Keyword.pop(options, :env, [])
    [{:env, env ++ own} | options]
  end

  @impl true
  # Only from a proxy whose start is pending: anyone may send this message, and a forged one
  # would make its sender the proxy of any os_pid (which_children, stop/1 and kill/2 by it).
  def handle_info({:"$exec_child", proxy, os_pid}, state)
      when is_map_key(state.pending, proxy) do
    state = %{
      state
      | pending: Map.delete(state.pending, proxy),
        children: Map.put(state.children, os_pid, %{proxy: proxy}),
        proxies: Map.put(state.proxies, proxy, os_pid)
    }

    {:noreply, state}
  end

  def handle_info({:"$exec_abandon", ref}, state) do
    case Map.pop(state.starts, ref) do
      {nil, _} -> :ok
      {proxy, _} -> Kernel.send(proxy, :"$exec_abandon")
    end

    {:noreply, %{state | starts: Map.delete(state.starts, ref)}}
  end

  def handle_info({:EXIT, proxy, reason}, state) do
    state = %{state | starts: Map.reject(state.starts, fn {_, p} -> p == proxy end)}

    # A proxy that crashed before it answered its start (one that could not start its process
    # answered itself and left normally).
    {from, pending} = Map.pop(state.pending, proxy)
    if from && reason != :normal, do: GenServer.reply(from, {:error, reason})
    state = %{state | pending: pending}

    case Map.pop(state.proxies, proxy) do
      {nil, _} ->
        {:noreply, state}

      {os_pid, proxies} ->
        children =
          case state.children do
            %{^os_pid => %{proxy: ^proxy}} -> Map.delete(state.children, os_pid)
            children -> children
          end

        {:noreply, %{state | proxies: proxies, children: children}}
    end
  end

  def handle_info(_message, state), do: {:noreply, state}

  # Waits until what the exited `os_pids` started is gone. Tether's stop of it ends in SIGKILL
  # after the child's kill_timeout; there is no message for its end, so Tether.info/1 is asked.
  defp await_background([]), do: :ok

  defp await_background(os_pids) do
    case Enum.filter(os_pids, &background?/1) do
      [] ->
        :ok

      left ->
        Process.sleep(5)
        await_background(left)
    end
  end

  defp background?(os_pid) do
    match?(%{background_jobs: :running}, Tether.info(os_pid))
  catch
    # The application is stopping: Tether stops what is left itself.
    :exit, _ -> false
  end

  # As erlexec's port program at shutdown: the stop sequence of each child, and wait until all
  # are gone, with what they left behind (Tether stops that once each child is gone).
  @impl true
  def terminate(_reason, state) do
    refs =
      for {proxy, _os_pid} <- state.proxies do
        ref = Process.monitor(proxy)
        Kernel.send(proxy, {:"$exec_stop", self(), make_ref()})
        ref
      end

    Enum.each(refs, fn ref -> receive do: ({:DOWN, ^ref, _, _, _} -> :ok) end)
    await_background(Map.keys(state.children))
    :ok
  end
end
