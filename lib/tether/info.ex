defmodule Tether.Info do
  @moduledoc false
  # What `Tether.info/1` and `Tether.info/0` report: a live process's record from its
  # Tether.Process and the native counters, an exited one's from `Tether.History`.

  @doc false
  @spec info(Tether.target()) :: map | {:error, :no_process | :not_started}
  def info(target) do
    Tether.Control.on_node(target, __MODULE__, :info, [], fn ->
      with {:ok, os_pid} <- resolve_any(target) do
        case live_info(os_pid) do
          {:ok, info} -> info
          :error -> exited_info(os_pid) |> with_background(os_pid)
        end
        |> with_wall_clock()
      end
    end)
  end

  @doc false
  @spec info() :: map
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
    case Tether.Control.resolve(pid) do
      {:ok, os_pid} -> {:ok, os_pid}
      _ -> Tether.History.os_pid_of(pid)
    end
  end

  defp resolve_any(target), do: Tether.Control.resolve(target)

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
end
