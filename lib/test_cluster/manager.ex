defmodule TestCluster.Manager do
  @moduledoc """
  The short name of `Tether.TestCluster.Manager`, for code written against our users' design
  (`TestCluster.Manager.start_cluster(node_count: 2)`). Every function delegates.
  """

  alias Tether.TestCluster.Manager

  @doc "See `Tether.TestCluster.Manager.start_cluster/1`."
  defdelegate start_cluster(options \\ []), to: Manager
  @doc "See `Tether.TestCluster.Manager.stop_cluster/1`."
  defdelegate stop_cluster(manager \\ Manager), to: Manager
  @doc "See `Tether.TestCluster.Manager.stop_node/2`."
  defdelegate stop_node(name, manager \\ Manager), to: Manager
  @doc "See `Tether.TestCluster.Manager.nodes/1`."
  defdelegate nodes(manager \\ Manager), to: Manager
  @doc "See `Tether.TestCluster.Manager.status/2`."
  defdelegate status(name, manager \\ Manager), to: Manager
  @doc "See `Tether.TestCluster.Manager.output/2`."
  defdelegate output(name, manager \\ Manager), to: Manager
  @doc "See `Tether.TestCluster.Manager.run_on/3`."
  defdelegate run_on(name, command, options \\ []), to: Manager
  @doc "See `Tether.TestCluster.Manager.subscribe/2`."
  defdelegate subscribe(pid \\ self(), manager \\ Manager), to: Manager
end
