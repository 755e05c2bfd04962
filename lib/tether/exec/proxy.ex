defmodule Tether.Exec.Proxy do
  @moduledoc """
  The pid that `:exec.run/2` returns: it starts the OS process with `Tether.run/2` (so it owns
  it), and turns Tether's `:DOWN` into erlexec's, with the raw wait status (`{exit_status,
  256}` for exit code 1) and `normal` after a `:exec.stop/1`. It exits with that reason, so a
  linked caller (`link`) gets the erlexec exit signal. It watches the caller: when the caller
  dies, the proxy exits and Tether stops the OS process.

  Output goes from Tether straight to its destination; only the `:DOWN` passes here, sent by
  Tether after the last output, so it still arrives after every chunk.
  """

  @doc false
  @spec start(Tether.command(), keyword, map, pid) :: {:ok, pid, pos_integer} | {:error, term}
  def start(command, options, flags, caller) do
    ref = make_ref()
    spawn_options = if flags.link, do: [:link, :monitor], else: [:monitor]

    {proxy, monitor} =
      :erlang.spawn_opt(fn -> init(command, options, flags, caller, ref) end, spawn_options)

    receive do
      {^ref, {:ok, os_pid}} ->
        Process.demonitor(monitor, [:flush])
        {:ok, proxy, os_pid}

      {^ref, {:error, reason}} ->
        Process.demonitor(monitor, [:flush])
        {:error, reason}

      {:DOWN, ^monitor, :process, ^proxy, reason} ->
        {:error, reason}
    end
  end

  @doc false
  # Marks the OS process as stopped on request: its DOWN reason becomes `normal`.
  @spec stopping(pid) :: :ok
  def stopping(proxy) do
    send(proxy, :"$exec_stopping")
    :ok
  end

  defp init(command, options, flags, caller, ref) do
    Process.monitor(caller)

    try do
      Tether.run(command, [{:monitor, true} | options])
    rescue
      error in ArgumentError -> {:error, {:invalid_option, Exception.message(error)}}
    end
    |> case do
      {:ok, _pid, os_pid} ->
        Process.put(:"$exec_os_pid", os_pid)
        :ets.insert(Tether.Exec.Server.table(), {os_pid, self()})
        send(caller, {ref, {:ok, os_pid}})
        loop(os_pid, caller, flags, false)

      {:error, reason} ->
        send(caller, {ref, {:error, reason}})
    end
  end

  defp loop(os_pid, caller, flags, stopping?) do
    receive do
      :"$exec_stopping" ->
        loop(os_pid, caller, flags, true)

      {:DOWN, ^os_pid, :process, _pid, reason} ->
        reason = if stopping?, do: :normal, else: :exec.to_erlexec_reason(reason)
        :ets.delete_object(Tether.Exec.Server.table(), {os_pid, self()})
        if flags.monitor, do: send(caller, {:DOWN, os_pid, :process, self(), reason})
        exit(reason)

      {:DOWN, _ref, :process, ^caller, _} ->
        # The caller is gone: leaving makes Tether stop the OS process (we own it).
        :ets.delete_object(Tether.Exec.Server.table(), {os_pid, self()})
        exit(:normal)

      _ ->
        loop(os_pid, caller, flags, stopping?)
    end
  end
end
