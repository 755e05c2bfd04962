defmodule Tether.Process do
  @moduledoc false
  # The BEAM process that stands for one OS process: the `pid` of `{:ok, pid, os_pid}`.
  #
  # It lives exactly as long as the OS process: link to it or monitor it like any process. It
  # exits with reason `:normal` when the OS process exits with status 0 (or the
  # `:success_exit_code`), and otherwise with the same reason the `:DOWN` message carries
  # (`{:exit_status, code}`, `{:signal, name, core?}`). It holds the native handle of the OS
  # process: if it is killed, the OS process is stopped.
  #
  # Output sent to pids does not pass through it: the native event loop sends `{:stdout, ...}`
  # messages straight to their destination. Output for a fun or `:print` does: this process runs
  # the handler for each chunk, and then sends the `:DOWN` itself, so that it still follows every
  # chunk.

  require Logger

  @typedoc "The reason a Tether process (and the `:DOWN` message) reports."
  @type reason ::
          :normal
          | {:exit_status, 1..255}
          | {:signal, atom | pos_integer, boolean}
          | :unknown

  @os_pid_key :"$tether_os_pid"
  @info_key :"$tether_info"
  @adopted_key :"$tether_adopted"

  @doc false
  # Starts the OS process for `spec` (with `adopt: os_pid`, watches that existing process
  # instead) and the Tether.Process that stands for it.
  #
  # The new process makes the native call, so the handle is never anyone else's, and the event
  # loop answers the caller directly: no relay through the new process. It may therefore not
  # have recorded its os_pid yet when this returns; `os_pid/1` and `live_info/1` wait for it.
  #
  # Nothing is spawned when the application does not run (`{:error, :not_started}`) or when
  # `{:group, pgid}` names a group that is not a live child's (`{:error, :bad_group}`).
  @spec start(Tether.Spec.t(), keyword) :: {:ok, pid, Tether.os_pid()} | {:error, atom}
  def start(spec, options \\ []) do
    cond do
      not Tether.Guard.started?() -> {:error, :not_started}
      (refusal = Tether.Guard.check_group(spec.group, &adopted?/1)) != :ok -> refusal
      true -> do_start(spec, options)
    end
  end

  defp do_start(spec, options) do
    ref = make_ref()
    spawn_options = if spec.link, do: [:link, :monitor], else: [:monitor]
    adopt = Keyword.get(options, :adopt)

    started = %{
      owner: self(),
      command: spec.argv,
      # Monotonic only: info/1 derives the wall clock time (a DateTime would double what a
      # long-running child costs in memory).
      started_at: System.monotonic_time(:millisecond)
    }

    {pid, monitor} =
      :erlang.spawn_opt(__MODULE__, :init, [ref, spec, adopt, started], spawn_options)

    receive do
      {:tether_spawned, ^ref, result} ->
        Process.demonitor(monitor, [:flush])
        # Recorded here, before run/2 returns, so that info/1 knows the process even if it
        # exits before its Tether.Process gets to run.
        record_spawn(result, pid, spec, started)

      {:DOWN, ^monitor, :process, ^pid, _reason} ->
        {:error, :internal}
    end
  end

  defp record_spawn({:ok, os_pid}, pid, spec, started) do
    Tether.History.record_start(os_pid, Map.merge(started, %{os_pid: os_pid, pid: pid}))
    Tether.History.count(:spawned)
    Tether.Trace.event(os_pid, fn -> "Tether spawned #{os_pid}: #{inspect(spec.argv)}" end)
    {:ok, pid, os_pid}
  end

  defp record_spawn({:error, reason}, _pid, spec, _started) do
    Tether.History.count(:spawn_errors)

    Tether.Trace.event(nil, fn ->
      "Tether could not spawn #{inspect(spec.argv)}: #{inspect(reason)}"
    end)

    {:error, reason}
  end

  @doc false
  def init(ref, spec, adopt, started) do
    caller = started.owner

    case native_start(caller, ref, spec, adopt) do
      {:ok, handle} -> await_spawn(spec, handle, started, adopt != nil)
      :badarg -> send(caller, {:tether_spawned, ref, {:error, :badarg}})
    end
  end

  defp native_start(caller, ref, spec, adopt) do
    case adopt do
      nil -> {:ok, Tether.Native.start(spec, caller, self(), ref)}
      os_pid -> {:ok, Tether.Native.adopt(os_pid, spec, caller, self(), ref)}
    end
  rescue
    # Tether.Options only builds specs the NIF decodes; this is defence in depth.
    ArgumentError -> :badarg
  end

  defp await_spawn(spec, handle, started, adopted?) do
    receive do
      {:tether_spawned, {:ok, os_pid}} ->
        if adopted?, do: Process.put(@adopted_key, true)
        # The os_pid last: readers take its presence to mean that everything is recorded.
        Process.put(@info_key, started)
        Process.put(@os_pid_key, os_pid)

        wait(%{
          os_pid: os_pid,
          handle: handle,
          handlers: spec.handlers,
          down_to: spec.down_to,
          started: started
        })

      {:tether_spawned, {:error, _reason}} ->
        :ok
    end
  end

  # Without output handlers the process only waits for the exit. Once it has waited a while it
  # hibernates: its heap shrinks to its live data (under 1 KiB instead of ~2.7 KiB), which
  # matters with 10,000 children; short-lived commands never pay for it.
  @idle_before_hibernate 100

  defp wait(%{handlers: handlers} = state) when handlers == %{},
    do: loop(state, @idle_before_hibernate)

  defp wait(state), do: loop(state, :infinity)

  @doc false
  def loop(state), do: loop(state, :infinity)

  defp loop(%{os_pid: os_pid} = state, idle) do
    receive do
      {stream, ^os_pid, data} when stream in [:stdout, :stderr] ->
        handle_output(state, stream, data)
        wait(state)

      {:tether_passive, ^os_pid, stream} ->
        # The handler has run for every chunk so far: ask for the next one.
        Tether.Native.activate(os_pid, stream, 1)
        wait(state)

      {:tether_sync, from, ref} ->
        send(from, {ref, :synced})
        wait(state)

      {:tether_exit, ^os_pid, reason, final} ->
        if state.down_to, do: send(state.down_to, {:DOWN, os_pid, :process, self(), reason})
        finish(state, reason, final)
        exit(reason)

      _other ->
        wait(state)
    after
      idle -> :erlang.hibernate(__MODULE__, :loop, [state])
    end
  end

  # Counts the exit and keeps what Tether.info/1 reports of it after it is gone.
  defp finish(state, reason, final) do
    Tether.History.count(:exited)

    Tether.Trace.event(state.os_pid, fn -> "Tether #{state.os_pid} exited: #{inspect(reason)}" end)

    info =
      state.started
      |> Map.merge(final)
      |> Map.merge(%{
        os_pid: state.os_pid,
        pid: self(),
        status: {:exited, reason},
        exited_at: System.monotonic_time(:millisecond)
      })

    Tether.History.record(state.os_pid, info)
  end

  @doc false
  # Whether `pid` stands for a process adopted by Tether.manage/2 rather than spawned.
  @spec adopted?(pid) :: boolean
  def adopted?(pid) do
    case dictionary(pid) do
      %{@adopted_key => true} -> true
      _ -> false
    end
  end

  @doc false
  # What Tether.info/1 reports of a live process, without a message round trip.
  @spec live_info(pid) :: map | nil
  def live_info(pid) do
    case dictionary(pid) do
      %{@info_key => info} -> info
      _ -> nil
    end
  end

  # The process dictionary of a Tether.Process, once it has recorded its OS process (a process
  # fresh from `start/2` may still be recording it: then wait for it). Nil for any other
  # process.
  defp dictionary(pid, wait? \\ true) do
    case Process.info(pid, :dictionary) do
      {:dictionary, dictionary} ->
        dictionary = Map.new(dictionary)

        if wait? and starting?(pid, dictionary) and sync(pid),
          do: dictionary(pid, false),
          else: dictionary

      nil ->
        nil
    end
  end

  # A Tether.Process that has not recorded its os_pid yet.
  defp starting?(pid, dictionary) do
    not Map.has_key?(dictionary, @os_pid_key) and
      Process.info(pid, :initial_call) == {:initial_call, {__MODULE__, :init, 4}}
  end

  # Waits until `pid` has handled every message sent to it so far; false if it exits first.
  defp sync(pid) do
    ref = Process.monitor(pid)
    send(pid, {:tether_sync, self(), ref})

    receive do
      {^ref, :synced} ->
        Process.demonitor(ref, [:flush])
        true

      {:DOWN, ^ref, :process, ^pid, _} ->
        false
    end
  end

  defp handle_output(state, stream, data) do
    case state.handlers do
      %{^stream => handler} -> handler.(stream, state.os_pid, data)
      _ -> :ok
    end
  rescue
    error ->
      Logger.error(
        "Tether output handler for #{state.os_pid} raised: " <> Exception.message(error)
      )
  end

  @doc """
  The os_pid of the OS process that `pid` stands for.

      iex> {:ok, pid, os_pid} = Tether.run(["sleep", "10"])
      iex> Tether.Process.os_pid(pid) == {:ok, os_pid}
      true
      iex> Tether.kill(os_pid, :sigkill)
      :ok
  """
  @spec os_pid(pid) :: {:ok, Tether.os_pid()} | {:error, :no_process}
  def os_pid(pid) when is_pid(pid) and node(pid) == node() do
    # No message round trip (but for a Tether.Process still starting): any pid answers at once.
    # The dictionary entry is confirmed by the native registry, so a process that merely has the
    # key is not mistaken for a Tether one.
    with %{@os_pid_key => os_pid} <- dictionary(pid),
         {:ok, ^pid} <- Tether.Native.process_of(os_pid) do
      {:ok, os_pid}
    else
      _ -> {:error, :no_process}
    end
  end

  def os_pid(pid) when is_pid(pid), do: {:error, :no_process}
end
