defmodule Tether.Exec.Server do
  @moduledoc false
  # Supervises the `exec` server when `:exec` starts it on first use (code that calls
  # `:exec.run/2` without `:exec.start/0`, as code written for an erlexec that its application
  # started does). Started by Tether's application, so the `exec` server it holds stops with
  # Tether, and with it every `:exec` child. Its children are temporary: a killed `exec` server
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
