defmodule Tether.TestCluster.NodeBoot do
  @moduledoc """
  What a default cluster node runs: `elixir --name NAME --cookie COOKIE --no-halt -pa <tether>
  -e "Tether.TestCluster.NodeBoot.main()"`. It starts Tether and the health endpoint on
  `TEST_HTTP_PORT`, then says so on stdout.
  """

  @doc "Boots the node's services; the VM keeps running (`--no-halt`)."
  @spec main() :: :ok
  def main do
    {:ok, _} = Application.ensure_all_started(:tether)
    port = String.to_integer(System.fetch_env!("TEST_HTTP_PORT"))

    case Tether.TestCluster.Health.serve(port) do
      {:ok, _} ->
        IO.puts("node #{node()} serving http on 127.0.0.1:#{port}")

      {:error, reason} ->
        IO.puts(:stderr, "node #{node()} cannot serve http on #{port}: #{inspect(reason)}")
        System.halt(3)
    end
  end
end
