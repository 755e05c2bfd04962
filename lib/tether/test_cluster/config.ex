defmodule Tether.TestCluster.Config do
  @moduledoc false
  # The options of `Tether.TestCluster.Manager.start_cluster/1`: checked in the caller, before
  # anything starts (bad input raises `ArgumentError` naming the option), merged with the
  # defaults into the config the manager runs, and planned into the nodes' slots.
  #
  # The options that go through to the nodes' `Tether.run/2` (`:env`, `:kill_timeout`) are
  # checked by Tether's validator, never here: see `check_run_options!/1`.

  alias Tether.TestCluster.Placement

  @type boot :: Tether.TestCluster.NodeSpec.boot()

  @type t :: %{
          optional(:tether_dirs) => %{optional(node) => Path.t() | nil},
          optional(:slots) => [Placement.slot()],
          node_count: pos_integer,
          hosts: [node] | nil,
          placement: Placement.placement(),
          on_host_down: :fail | :move,
          base_http_port: pos_integer,
          cookie: atom,
          hostname: String.t(),
          name_prefix: String.t(),
          boot: boot,
          boot_timeout: pos_integer,
          mix_env: String.t(),
          env: [{String.t(), String.t()}],
          kill_timeout: number,
          stop_timeout: pos_integer,
          max_restarts: non_neg_integer,
          restart_backoff: non_neg_integer,
          health_interval: pos_integer,
          subscriber: pid
        }

  @defaults [
    node_count: 2,
    hosts: nil,
    placement: :round_robin,
    on_host_down: :fail,
    base_http_port: 4100,
    cookie: :tether_cluster,
    hostname: "127.0.0.1",
    name_prefix: "tether_n",
    boot: :elixir,
    boot_timeout: 30_000,
    mix_env: "dev",
    env: [],
    kill_timeout: 5,
    stop_timeout: 15_000,
    max_restarts: 3,
    restart_backoff: 500,
    health_interval: 2000
  ]

  # The options Tether's validator checks, as the nodes' `Tether.run/2` gets them.
  @run_options [:env, :kill_timeout]

  @doc "The config of `options`, or `ArgumentError` naming the first bad option."
  @spec validate!([Tether.TestCluster.Manager.option()]) :: t
  def validate!(options) do
    Enum.each(options, fn {key, _} ->
      Keyword.has_key?(@defaults, key) or key == :subscriber or
        raise ArgumentError, "unknown option #{inspect(key)} for start_cluster/1"
    end)

    config = Keyword.merge(@defaults, options)

    checks = [
      node_count: &(is_integer(&1) and &1 > 0),
      hosts: &valid_hosts?/1,
      placement: &(&1 == :round_robin or is_function(&1, 2)),
      on_host_down: &(&1 in [:fail, :move]),
      base_http_port: &(is_integer(&1) and &1 > 0 and &1 < 65_000),
      cookie: &(is_atom(&1) and &1 not in [nil, true, false]),
      hostname: &(is_binary(&1) and &1 != ""),
      name_prefix: &(is_binary(&1) and &1 =~ ~r/^[A-Za-z][A-Za-z0-9_]*$/),
      boot: &valid_boot?(&1, config[:hosts]),
      boot_timeout: &(is_integer(&1) and &1 > 0),
      mix_env: &is_binary/1,
      stop_timeout: &(is_integer(&1) and &1 > 0),
      max_restarts: &(is_integer(&1) and &1 >= 0),
      restart_backoff: &(is_integer(&1) and &1 >= 0),
      health_interval: &(is_integer(&1) and &1 > 0)
    ]

    for {key, valid?} <- checks, not valid?.(config[key]) do
      raise ArgumentError, "invalid value for #{inspect(key)} option: #{inspect(config[key])}"
    end

    check_run_options!(Keyword.take(config, @run_options))

    subscriber = Keyword.get(options, :subscriber, self())
    is_pid(subscriber) or raise ArgumentError, "invalid value for :subscriber option"

    config
    |> Map.new()
    |> Map.update!(:env, &Enum.to_list/1)
    |> Map.put(:subscriber, subscriber)
    |> host_counts!(options)
  end

  # The cluster options that the nodes' `Tether.run/2` gets are checked by Tether's one
  # validator: one message per bad option, wherever they are given.
  defp check_run_options!(run_options) do
    _spec = Tether.Options.validate(:run, ["true"], run_options)
    :ok
  end

  @doc "The config with the slots (`Tether.TestCluster.Placement.plan/6`) of its nodes."
  @spec plan(t) :: t
  def plan(config) do
    {hosts, hostname} =
      if config.hosts, do: {config.hosts, nil}, else: {[node()], config.hostname}

    slots =
      Placement.plan(
        config.node_count,
        hosts,
        config.placement,
        config.base_http_port,
        config.name_prefix,
        hostname
      )

    Map.put(config, :slots, slots)
  end

  defp valid_hosts?(nil), do: true

  defp valid_hosts?([_ | _] = hosts) do
    names =
      Enum.map(hosts, fn
        {host, _} -> host
        host -> host
      end)

    Enum.all?(hosts, fn
      {host, count} -> agent_name?(host) and is_integer(count) and count > 0
      host -> agent_name?(host)
    end) and
      (Enum.all?(hosts, &is_tuple/1) or not Enum.any?(hosts, &is_tuple/1)) and
      length(Enum.uniq(names)) == length(names)
  end

  defp valid_hosts?(_), do: false

  defp agent_name?(host), do: is_atom(host) and String.contains?(Atom.to_string(host), "@")

  # `hosts: [{agent, count}]` is a placement by counts; node_count is their sum.
  defp host_counts!(%{hosts: [{_, _} | _] = counts} = config, options) do
    total = counts |> Enum.map(&elem(&1, 1)) |> Enum.sum()

    if Keyword.has_key?(options, :node_count) and config.node_count != total do
      raise ArgumentError,
            "invalid value for :node_count option: #{config.node_count} " <>
              "(the :hosts counts add up to #{total})"
    end

    if Keyword.has_key?(options, :placement) do
      raise ArgumentError, "invalid value for :placement option: the :hosts have counts"
    end

    %{config | hosts: Enum.map(counts, &elem(&1, 0)), node_count: total}
    |> Map.put(:placement, {:counts, counts})
  end

  defp host_counts!(config, options) do
    if config.hosts == nil and Keyword.has_key?(options, :placement) do
      raise ArgumentError, "invalid value for :placement option: it needs :hosts"
    end

    config
  end

  defp valid_boot?(:elixir, _hosts), do: true
  defp valid_boot?({:mix_run, dir}, nil), do: is_binary(dir) and File.dir?(dir)
  # With hosts, the directory is checked on each of them (`Tether.TestCluster.Hosts`).
  defp valid_boot?({:mix_run, dir}, _hosts), do: is_binary(dir)
  defp valid_boot?({:command, fun}, _hosts), do: is_function(fun, 1)
  defp valid_boot?(_, _hosts), do: false
end
