defmodule Tether.TestCluster.Agent do
  @moduledoc """
  A host of a multi-host test cluster: a plain BEAM node that runs Tether, nothing else.

  The manager (`Tether.TestCluster.Manager.start_cluster(hosts: [agent, …])`) connects to it
  and starts cluster nodes on it with `Tether.run(cmd, node: agent)`: the agent's Tether owns
  them, and stops them when the manager (or its connection) goes away. On each host run:

      elixir --name agent1@HOST --cookie COOKIE --hidden -S mix tether.agent

  in any project that depends on Tether (or in Tether's own checkout). `COOKIE` is the
  cluster's cookie (the `:cookie` option of `start_cluster/1`). The agent is hidden so that
  `global` never disconnects it from the manager when a cluster node goes down.

  The agent's VM should be the first distributed VM on its host (it starts `epmd` as every
  `elixir --name` does), so that `epmd` never runs inside a node that will be stopped.
  """

  @doc """
  Makes this VM an agent: starts distribution as a hidden node when it is not distributed yet
  (`epmd` must then be running), starts Tether, and prints `tether agent NAME ready`.
  """
  @spec main([{:name, node | nil} | {:cookie, atom | nil}]) :: :ok
  def main(options \\ []) do
    with name when name != nil <- options[:name], false <- Node.alive?() do
      case :net_kernel.start(name, %{name_domain: :longnames, hidden: true}) do
        {:ok, _} ->
          :ok

        {:error, reason} ->
          raise "cannot start distribution as #{name} (#{inspect(reason)}): is epmd running? " <>
                  "Run `epmd -daemon` first, or start the agent with `elixir --name NAME ...`"
      end
    end

    if cookie = options[:cookie], do: Node.set_cookie(cookie)
    Node.alive?() or raise "the agent must be a distributed node: give it --name"
    {:ok, _} = Application.ensure_all_started(:tether)
    IO.puts("tether agent #{node()} ready")
  end

  @doc """
  The command that starts an agent named `name` on this machine with this VM's Tether code:
  `elixir --erl "-start_epmd false" --name NAME --cookie COOKIE --hidden --no-halt -pa … -e
  "Tether.TestCluster.Agent.main()"`. It never starts `epmd` (this VM must be distributed
  already), so stopping it cannot take `epmd` down. Used by the tests and the demo to simulate
  hosts.
  """
  @spec command(node, atom) :: [String.t()]
  def command(name, cookie) when is_atom(name) and is_atom(cookie) do
    ebin = Path.join(:code.lib_dir(:tether), "ebin")

    ["elixir", "--erl", "-start_epmd false", "--name", Atom.to_string(name)] ++
      ["--cookie", Atom.to_string(cookie), "--hidden", "--no-halt", "-pa", ebin] ++
      ["-e", "Tether.TestCluster.Agent.main()"]
  end
end
