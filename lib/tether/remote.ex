defmodule Tether.Remote do
  @moduledoc false
  # Runs OS processes on other nodes of an Erlang cluster (`Tether.run(cmd, node: node)`), over
  # ordinary distribution.
  #
  # The NIF can only send to local pids, so on the remote node a small relay process calls
  # `Tether.run/2` (it owns the OS process) and forwards `{:stdout, ...}`, `{:stderr, ...}`,
  # `{:tether_passive, ...}` and the `:DOWN` to their destinations, in order. The relay monitors
  # the caller: if the caller dies or its node disconnects, the relay exits and Tether stops the
  # OS process (unless `{:detach, true}`). On the caller's node a guard monitors the relay: if the
  # remote node goes down, the caller gets `{:DOWN, os_pid, :process, pid, {:nodedown, node}}`.
  #
  # The returned `pid` is the `Tether.Process` on the remote node; `stop/1`, `kill/2`,
  # `status/1`, `send/2`, `activate/3`, `winsz/3` and `info/1` accept it from any node.
  # Output destinations must be pids (or the caller): funs and `:print` would run on the remote
  # node and are refused.

  @doc false
  # On the caller's node: starts `command` on `spec.node`. `spec` is `options` validated here
  # (`Tether.Options.validate(:run, ...)`), so bad options raise in the caller naming the
  # option; `options` go to the other node as given (its `{:node, node}` is that node itself).
  @spec run(Tether.Spec.t(), Tether.command(), list) ::
          {:ok, pid, Tether.os_pid()} | {:error, term}
  def run(%Tether.Spec{node: node} = spec, command, options) do
    caller = self()
    monitor? = spec.monitor != nil

    if spec.sync do
      # The whole synchronous run happens there; its owner is the call's process.
      :erpc.call(node, __MODULE__, :run_sync, [command, options], :infinity)
    else
      start(node, command, options, caller, monitor?, spec.link)
    end
  catch
    :error, {:erpc, :noconnection} -> {:error, :nodedown}
    :error, {:erpc, reason} -> {:error, reason}
    :error, {:exception, :undef, _} -> {:error, :tether_not_running}
    :error, {:exception, %ArgumentError{} = error, _} -> raise error
  end

  defp start(node, command, options, caller, monitor?, link?) do
    case :erpc.call(node, __MODULE__, :start_relay, [command, options, caller], 30_000) do
      {:ok, relay, pid, os_pid} ->
        if monitor?, do: guard(caller, relay, node, pid, os_pid)
        if link?, do: Process.link(pid)
        {:ok, pid, os_pid}

      {:error, reason} ->
        {:error, reason}
    end
  end

  # Tells the caller when the relay is lost with its node; quiet when the relay ends normally
  # (it has then forwarded the :DOWN itself).
  defp guard(caller, relay, node, pid, os_pid) do
    spawn(fn ->
      relay_ref = Process.monitor(relay)
      caller_ref = Process.monitor(caller)

      receive do
        {:DOWN, ^relay_ref, :process, ^relay, :noconnection} ->
          send(caller, {:DOWN, os_pid, :process, pid, {:nodedown, node}})

        {:DOWN, ^relay_ref, :process, ^relay, _normal} ->
          :ok

        {:DOWN, ^caller_ref, :process, ^caller, _} ->
          :ok
      end
    end)
  end

  @doc false
  # On the remote node (called over :erpc): starts the relay, which starts the OS process.
  @spec start_relay(Tether.command(), list, pid) ::
          {:ok, pid, pid, Tether.os_pid()} | {:error, term}
  def start_relay(command, options, caller) do
    reply_to = self()
    ref = make_ref()
    relay = spawn(fn -> relay(command, options, caller, reply_to, ref) end)
    monitor = Process.monitor(relay)

    receive do
      {^ref, result} ->
        Process.demonitor(monitor, [:flush])
        result

      {:DOWN, ^monitor, :process, ^relay, reason} ->
        {:error, {:relay_failed, reason}}
    end
  end

  defp relay(command, options, caller, reply_to, ref) do
    caller_ref = Process.monitor(caller)
    {options, destinations} = local_destinations(options, caller)

    # Validated on this node (the run is local here), and never :sync (run/3 calls Tether.run/2
    # here for that).
    spec = Tether.Options.validate(:run, command, options)

    case Tether.Process.start(spec) do
      {:ok, pid, os_pid} ->
        send(reply_to, {ref, {:ok, self(), pid, os_pid}})
        forward(os_pid, caller, caller_ref, destinations)

      {:error, reason} ->
        send(reply_to, {ref, {:error, reason}})
    end
  end

  # Destinations on other nodes become the relay (which forwards); the rest stay.
  defp local_destinations(options, caller) do
    Enum.map_reduce(options, %{monitor: nil}, fn
      :monitor, acc ->
        {:monitor, %{acc | monitor: caller}}

      {:monitor, true}, acc ->
        {:monitor, %{acc | monitor: caller}}

      stream, acc when stream in [:stdout, :stderr] ->
        {stream, Map.put(acc, stream, caller)}

      {stream, {:send, pid}}, acc when stream in [:stdout, :stderr] ->
        remote_pid(stream, pid, acc)

      {stream, pid}, acc when stream in [:stdout, :stderr] and is_pid(pid) ->
        remote_pid(stream, pid, acc)

      {:link, _}, acc ->
        {{:link, false}, acc}

      :link, acc ->
        {{:link, false}, acc}

      other, acc ->
        {other, acc}
    end)
  end

  defp remote_pid(stream, pid, acc) when node(pid) == node(), do: {{stream, pid}, acc}
  defp remote_pid(stream, pid, acc), do: {stream, Map.put(acc, stream, pid)}

  defp forward(os_pid, caller, caller_ref, destinations) do
    receive do
      {stream, ^os_pid, _} = message when stream in [:stdout, :stderr] ->
        if to = destinations[stream], do: send(to, message)
        forward(os_pid, caller, caller_ref, destinations)

      {:tether_passive, ^os_pid, stream} = message ->
        if to = destinations[stream], do: send(to, message)
        forward(os_pid, caller, caller_ref, destinations)

      {:DOWN, ^os_pid, :process, _pid, _reason} = message ->
        if destinations.monitor, do: send(destinations.monitor, message)

      {:DOWN, ^caller_ref, :process, ^caller, _} ->
        # The caller (or its node) is gone: leaving makes Tether stop the OS process.
        :ok
    end
  end

  @doc false
  # On the remote node (called over :erpc): a `:sync` run, owned by the call's process.
  @spec run_sync(Tether.command(), list) :: {:ok, keyword} | {:error, term}
  def run_sync(command, options) do
    :run |> Tether.Options.validate(command, options) |> Tether.Sync.run()
  end
end
