defmodule Tether.TestCluster.Boot do
  @moduledoc false
  # Whether a booting node has joined. Nothing here dials or polls a node: the manager is
  # subscribed to `:net_kernel.monitor_nodes/1` and every node connects to it as it boots
  # (`TETHER_CLUSTER_MANAGER`), so a join reaches the manager as `{:nodeup, name}` (or the node
  # is connected already when its OS process is known to have started). The manager then runs
  # `check/3` in a task; the `:boot_timeout` is a timer of the manager.

  alias Tether.TestCluster.{Health, NodeSpec}

  @doc """
  `:ok` when node `spec` is connected as the OS process `os_pid` (not a previous run of it
  still leaving) and, for a boot mode that serves it, answers HTTP before `deadline`
  (monotonic ms); `:not_joined` otherwise, then a later `nodeup` is checked again.
  """
  @spec check(NodeSpec.t(), Tether.os_pid(), integer) :: :ok | :not_joined
  def check(spec, os_pid, deadline) do
    if joined?(spec, os_pid, deadline) and health_answers?(spec, deadline),
      do: :ok,
      else: :not_joined
  end

  # Connected, and not a previous run of the node still leaving (the connection of a node
  # just killed can outlive it by a moment): an `elixir` node's VM is the OS process we
  # started, so its own OS pid is `os_pid`. A `{:command, fun}` may wrap it; only its name
  # is checked.
  defp joined?(spec, os_pid, deadline) do
    cond do
      spec.name not in Node.list() -> false
      match?({:command, _}, spec.boot) -> true
      true -> :erpc.call(spec.name, System, :pid, [], 2000) == Integer.to_string(os_pid)
    end
  catch
    # Connected but slow to answer (a loaded machine): no other nodeup will come, ask again.
    :error, {:erpc, :timeout} -> before?(deadline) and joined?(spec, os_pid, deadline)
    :error, {:erpc, _} -> false
  end

  # An `:elixir` node serves HTTP before it connects (`Tether.TestCluster.NodeBoot`), so the
  # first GET normally answers; the retries are for a server still binding its port.
  defp health_answers?(spec, deadline) do
    cond do
      not NodeSpec.serves_health?(spec) -> true
      Health.http_get(NodeSpec.url(spec) <> "/health", 500) == :ok -> true
      before?(deadline) -> retry_health(spec, deadline)
      true -> false
    end
  end

  defp retry_health(spec, deadline) do
    Process.sleep(100)
    health_answers?(spec, deadline)
  end

  defp before?(deadline), do: System.monotonic_time(:millisecond) < deadline
end
