defmodule Tether.TestCluster.NodeBoot do
  @moduledoc """
  What a default cluster node runs: `elixir --name NAME --cookie COOKIE --no-halt -pa <tether>
  -e "Tether.TestCluster.NodeBoot.main()"`. It starts Tether and the health endpoint on
  `TEST_HTTP_HOST:TEST_HTTP_PORT`, says so on stdout, and connects to `TETHER_CLUSTER_MANAGER`
  (when set) so that the manager sees it join.
  """

  @doc "Boots the node's services; the VM keeps running (`--no-halt`)."
  @spec main() :: :ok
  def main do
    {:ok, _} = Application.ensure_all_started(:tether)
    port = String.to_integer(System.fetch_env!("TEST_HTTP_PORT"))
    host = System.get_env("TEST_HTTP_HOST", "127.0.0.1")
    {:ok, address} = :inet.getaddr(String.to_charlist(host), :inet)

    case Tether.TestCluster.Health.serve(port, address) do
      {:ok, _} ->
        IO.puts("node #{node()} serving http on #{host}:#{port}")
        if manager = System.get_env("TETHER_CLUSTER_MANAGER"), do: Node.connect(:"#{manager}")
        :ok

      {:error, reason} ->
        IO.puts(:stderr, "node #{node()} cannot serve http on #{port}: #{inspect(reason)}")
        System.halt(3)
    end
  end
end
