defmodule Tether.TestCluster.NodeSpec do
  @moduledoc """
  One cluster node's configuration, and the command and environment that boot it.

  Boot modes (the `:boot` option of `Tether.TestCluster.Manager.start_cluster/1`):

    * `:elixir` (default) - `elixir --name NAME --cookie COOKIE --no-halt -pa <tether ebin> -e
      "Tether.TestCluster.NodeBoot.main()"`: a plain node with Tether's code that serves a
      health endpoint on its HTTP port with `:inets`.
    * `{:mix_run, project_dir}` - `elixir --name NAME --cookie COOKIE -S mix run --no-halt` in
      `project_dir`, exactly as a Phoenix project's multi-node tests do.
    * `{:command, fun}` - `fun.(spec)` returns the argv to run. Like the other modes, the node
      it boots must connect to the manager, named in its `TETHER_CLUSTER_MANAGER` environment
      variable (`Tether.TestCluster.NodeBoot.main/0` does): the manager learns joins from
      `nodeup`s, it never dials a node.
  """

  @enforce_keys [:name, :index, :http_port, :hostname, :cookie, :boot]
  defstruct [
    :name,
    :index,
    :http_port,
    :hostname,
    :cookie,
    :boot,
    mix_env: "dev",
    env: [],
    host: nil,
    manager: nil,
    tether_dir: nil
  ]

  @type boot :: :elixir | {:mix_run, Path.t()} | {:command, (t -> [String.t()])}
  @type t :: %__MODULE__{
          name: node,
          index: pos_integer,
          http_port: :inet.port_number(),
          hostname: String.t(),
          cookie: atom,
          boot: boot,
          mix_env: String.t(),
          env: [{String.t(), String.t()}],
          host: node | nil,
          manager: node | nil,
          tether_dir: Path.t() | nil
        }

  @doc "The node's base URL."
  @spec url(t) :: String.t()
  def url(spec), do: "http://#{spec.hostname}:#{spec.http_port}"

  @doc """
  The environment every node gets. `TEST_HTTP_HOST` is the address the default node's health
  endpoint binds; `TETHER_CLUSTER_MANAGER` (when the spec has a manager) is the node a booting
  node connects to, so that the manager learns it joined from a `nodeup` instead of polling.

      iex> spec = %Tether.TestCluster.NodeSpec{name: :"n1@127.0.0.1", index: 1, http_port: 4001,
      ...>   hostname: "127.0.0.1", cookie: :c, boot: :elixir}
      iex> Tether.TestCluster.NodeSpec.env(spec) |> Enum.sort()
      [{"ERLANG_COOKIE", "c"}, {"MIX_ENV", "dev"}, {"NODE_NAME", "n1@127.0.0.1"},
       {"PHX_PORT", "4001"}, {"PHX_SERVER", "true"}, {"PORT", "4001"},
       {"TEST_HTTP_HOST", "127.0.0.1"}, {"TEST_HTTP_PORT", "4001"}]
  """
  @spec env(t) :: [{String.t(), String.t()}]
  def env(spec) do
    port = Integer.to_string(spec.http_port)

    [
      {"PORT", port},
      {"PHX_PORT", port},
      {"TEST_HTTP_PORT", port},
      {"TEST_HTTP_HOST", spec.hostname},
      {"NODE_NAME", Atom.to_string(spec.name)},
      {"ERLANG_COOKIE", Atom.to_string(spec.cookie)},
      {"MIX_ENV", spec.mix_env},
      {"PHX_SERVER", "true"}
    ] ++
      if(spec.manager, do: [{"TETHER_CLUSTER_MANAGER", Atom.to_string(spec.manager)}], else: []) ++
      spec.env
  end

  @doc """
  The argv and the `Tether.run/2` options (without destinations) that boot the node.
  `:elixir` uses Tether's code in `spec.tether_dir` (the node's host's copy; this VM's when
  `nil`). Nodes never start `epmd` (`-start_epmd false`): it runs before they boot.
  """
  @spec command(t) :: {[String.t()], Tether.options()}
  def command(%__MODULE__{boot: :elixir} = spec) do
    ebin = Path.join(spec.tether_dir || :code.lib_dir(:tether), "ebin")

    argv =
      distribution(spec) ++
        ["--no-halt", "-pa", ebin, "-e", "Tether.TestCluster.NodeBoot.main()"]

    {argv, env: env(spec)}
  end

  def command(%__MODULE__{boot: {:mix_run, dir}} = spec) do
    # The connect runs before `mix run` starts the project (`elixir` runs -e, then -S).
    connect =
      if spec.manager,
        do: ["-e", "Node.connect(:#{inspect(Atom.to_string(spec.manager))})"],
        else: []

    {distribution(spec) ++ connect ++ ["-S", "mix", "run", "--no-halt"], env: env(spec), cd: dir}
  end

  def command(%__MODULE__{boot: {:command, fun}} = spec) do
    {fun.(spec), env: env(spec)}
  end

  defp distribution(spec) do
    ["elixir", "--erl", "-start_epmd false", "--name", Atom.to_string(spec.name)] ++
      ["--cookie", Atom.to_string(spec.cookie)]
  end

  @doc "Whether the boot mode serves the health endpoint (so booting waits for it)."
  @spec serves_health?(t) :: boolean
  def serves_health?(spec), do: spec.boot == :elixir
end
