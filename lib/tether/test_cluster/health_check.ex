defmodule Tether.TestCluster.HealthCheck do
  @moduledoc false
  # The manager's health checks of its running nodes: every `:health_interval` ms (a timer)
  # and on `check_health/1`, in one task at a time, each node checked in parallel within 5 s.
  # The manager keeps the results (`Node.health`); it never waits for the task.

  require Logger

  alias Tether.TestCluster.{Cluster, Health, NodeSpec}
  alias Tether.TestCluster.Node, as: ClusterNode

  @node_timeout 5000

  @doc "Arms the periodic check, once."
  @spec ensure_timer(Cluster.t()) :: Cluster.t()
  def ensure_timer(%{health_timer: true} = state), do: state

  def ensure_timer(state) do
    schedule(state)
    %{state | health_timer: true}
  end

  @doc "The next periodic check, in `:health_interval` ms (`:health_tick`)."
  @spec schedule(Cluster.t()) :: :ok
  def schedule(%{config: nil}), do: :ok

  def schedule(state) do
    Process.send_after(self(), :health_tick, state.config.health_interval)
    :ok
  end

  @doc "Starts a check of every running node, unless one is out."
  @spec start(Cluster.t()) :: Cluster.t()
  def start(state) do
    if Cluster.task_running?(state, :health) do
      state
    else
      targets =
        for name <- state.order,
            node = state.nodes[name],
            node.status == :running,
            do: {name, node.exec_pid, NodeSpec.url(node.spec), NodeSpec.serves_health?(node.spec)}

      {state, _ref} = Cluster.start_task(state, :health, fn -> check_all(targets) end)
      state
    end
  end

  @doc "The check's results are in: kept, and every `check_health/1` caller answered."
  @spec done(Cluster.t(), [{node, ClusterNode.health()}]) :: Cluster.t()
  def done(state, results) do
    state = Enum.reduce(results, state, &record/2)
    statuses = Cluster.statuses(state)
    Enum.each(state.health_waiters, &GenServer.reply(&1, statuses))
    %{state | health_waiters: []}
  end

  defp check_all(targets) do
    targets
    |> Task.async_stream(&check_node/1, timeout: @node_timeout, on_timeout: :kill_task)
    |> Enum.zip(targets)
    |> Enum.map(fn
      {{:ok, health}, {name, _, _, _}} ->
        {name, health}

      {{:exit, _}, {name, _, _, _}} ->
        {name, %{os: :unknown, ping: :pang, http: {:error, :timeout}}}
    end)
  end

  defp check_node({name, exec_pid, url, http?}) do
    os =
      case Tether.status(exec_pid) do
        {:status, status} -> status
        {:error, reason} -> reason
      end

    http = if http?, do: Health.http_get(url <> "/health"), else: :not_checked
    %{os: os, ping: Node.ping(name), http: http}
  end

  defp record({name, health}, state) do
    case state.nodes do
      %{^name => node} ->
        if node.health != health do
          Logger.info("Cluster node #{name} health: #{inspect(health)}")
        end

        Cluster.put_node(state, name, %{node | health: health})

      _ ->
        state
    end
  end
end
