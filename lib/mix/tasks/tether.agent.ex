defmodule Mix.Tasks.Tether.Agent do
  @shortdoc "Runs this VM as a host of a multi-host Tether test cluster"
  @moduledoc """
  Runs this VM as an agent of a multi-host `Tether.TestCluster.Manager` cluster, until it is
  killed: see `Tether.TestCluster.Agent`.

      elixir --name agent1@10.0.0.2 --cookie secret --hidden -S mix tether.agent
      mix tether.agent --name agent1@10.0.0.2 --cookie secret   # when epmd already runs

  ## Options

    * `--name NAME` - the agent's node name, when the VM was not started with `--name`.
    * `--cookie COOKIE` - the cluster's cookie.
    * `--no-compile` - do not compile the project first.
  """
  use Mix.Task

  @impl true
  def run(args) do
    {options, _, invalid} =
      OptionParser.parse(args, strict: [name: :string, cookie: :string, no_compile: :boolean])

    invalid == [] or Mix.raise("unknown or invalid options: #{inspect(invalid)}")

    Mix.Task.run("app.start", if(options[:no_compile], do: ["--no-compile"], else: []))

    Tether.TestCluster.Agent.main(
      name: options[:name] && String.to_atom(options[:name]),
      cookie: options[:cookie] && String.to_atom(options[:cookie])
    )

    Process.sleep(:infinity)
  end
end
