defmodule Tether.Exec.Server do
  @moduledoc false
  # Supervises the `exec` server when `:exec` starts it on first use (code that calls
  # `:exec.run/2` without `:exec.start/0`, as code written for an erlexec that its application
  # started does). The `:exec` layer adds it to Tether's supervisor on that first use (Tether's
  # application knows nothing of `:exec`), so the `exec` server it holds stops with Tether, and
  # with it every `:exec` child. Its children are temporary: a killed `exec` server
  # is not restarted behind the caller's back, and the next `:exec.start/1` works at once.
  use DynamicSupervisor

  @spec start_link(term) :: Supervisor.on_start()
  def start_link(_), do: DynamicSupervisor.start_link(__MODULE__, :ok, name: __MODULE__)

  @impl true
  def init(:ok), do: DynamicSupervisor.init(strategy: :one_for_one)

  @doc false
  # Starts the `exec` server with `options` under this supervisor.
  @spec start_exec(list) :: {:ok, pid} | {:error, term}
  def start_exec(options) do
    with :ok <- ensure_started(), do: start_child(options)
  end

  # Under Tether's supervisor: restarted by it, stopped with it.
  defp ensure_started do
    case Supervisor.start_child(Tether.Supervisor, __MODULE__) do
      {:ok, _pid} -> :ok
      {:error, {:already_started, _pid}} -> :ok
      {:error, :already_present} -> restart()
      {:error, reason} -> {:error, reason}
    end
  end

  defp restart do
    case Supervisor.restart_child(Tether.Supervisor, __MODULE__) do
      {:ok, _pid} -> :ok
      {:error, :running} -> :ok
      {:error, reason} -> {:error, reason}
    end
  end

  defp start_child(options) do
    spec = %{
      id: :exec,
      start: {:exec, :start_link, [options]},
      restart: :temporary,
      shutdown: 30_000
    }

    case DynamicSupervisor.start_child(__MODULE__, spec) do
      {:ok, pid} -> {:ok, pid}
      {:error, {:already_started, pid}} -> {:ok, pid}
      {:error, reason} -> {:error, reason}
    end
  end
end
