defmodule Tether.TestCluster.Supervisor do
  @moduledoc """
  The supervisor of test cluster managers (`Tether.TestCluster.Manager`): a
  `DynamicSupervisor` registered under this module's name, whose managers are `:temporary`
  (a manager that dies has already lost its nodes: Tether stopped them).

  `Tether.TestCluster.Manager.start_cluster/1` starts it when it is not running, on its own
  (linked to no caller, so a test process that ends does not take the cluster with it). To
  have it in a supervision tree of your own instead, start it there:

      children = [Tether.TestCluster.Supervisor]

  It is TestCluster's own: Tether's application does not know of it.
  """

  use DynamicSupervisor

  @doc "Starts the supervisor, linked to the caller."
  @spec start_link([]) :: Supervisor.on_start()
  def start_link(_options \\ []) do
    DynamicSupervisor.start_link(__MODULE__, :ok, name: __MODULE__)
  end

  @doc """
  The running supervisor, started unlinked when there is none.

      iex> pid = Tether.TestCluster.Supervisor.ensure_started()
      iex> pid == Process.whereis(Tether.TestCluster.Supervisor)
      true
  """
  @spec ensure_started() :: pid
  def ensure_started do
    case Process.whereis(__MODULE__) do
      nil -> start_detached()
      pid -> pid
    end
  end

  # `DynamicSupervisor` has no unlinked start: it is started linked, then unlinked from the
  # caller (a supervisor traps exits, so its parent's exit would end it).
  defp start_detached do
    case start_link() do
      {:ok, pid} ->
        Process.unlink(pid)
        pid

      {:error, {:already_started, pid}} ->
        pid
    end
  end

  @doc """
  Starts the child `spec` (a manager's, `:temporary`) under the supervisor, or returns the
  pid of the one already registered under its name.
  """
  @spec start_child(Supervisor.child_spec()) :: pid
  def start_child(spec) do
    case DynamicSupervisor.start_child(ensure_started(), spec) do
      {:ok, pid} -> pid
      {:error, {:already_started, pid}} -> pid
    end
  end

  @impl true
  def init(:ok), do: DynamicSupervisor.init(strategy: :one_for_one)
end
