defmodule Tether.TestCluster.Placement do
  @moduledoc """
  Where each node of a cluster runs, and the name and HTTP port it gets there.

  A host is a node that runs Tether: the manager's own node, or an agent
  (`Tether.TestCluster.Agent`) on another machine. Node `i` (from 1) is named
  `:"<prefix><i>@<hostname>"`, where `hostname` is the host part of its host's node name, so
  names never collide. HTTP ports are allocated per hostname: the `k`-th node on a hostname
  serves on `base_http_port + k`. Two agents with the same hostname (several agents on one
  machine) share one port space, so their nodes get distinct ports too.

      iex> Tether.TestCluster.Placement.plan(3, [:"a@h1", :"b@h2"], :round_robin, 4100, "n")
      [
        %{index: 1, host: :"a@h1", hostname: "h1", name: :"n1@h1", http_port: 4101},
        %{index: 2, host: :"b@h2", hostname: "h2", name: :"n2@h2", http_port: 4101},
        %{index: 3, host: :"a@h1", hostname: "h1", name: :"n3@h1", http_port: 4102}
      ]
  """

  @typedoc "How nodes are spread over hosts: see `hosts_for/3`."
  @type placement ::
          :round_robin | {:counts, [{node, pos_integer}]} | (pos_integer, [node] -> node)

  @type slot :: %{
          index: pos_integer,
          host: node,
          hostname: String.t(),
          name: node,
          http_port: :inet.port_number()
        }

  @doc """
  The slots of `count` nodes over `hosts`. `hostname` overrides the host part of every host
  (the single-machine mode uses it for the manager's own node).
  """
  @spec plan(pos_integer, [node], placement, pos_integer, String.t(), String.t() | nil) ::
          [slot]
  def plan(count, hosts, placement, base_port, prefix, hostname \\ nil) do
    {slots, _used} =
      count
      |> hosts_for(hosts, placement)
      |> Enum.with_index(1)
      |> Enum.map_reduce(%{}, fn {host, index}, used ->
        hostname = hostname || hostname(host)
        port = next_port(Map.get(used, hostname, MapSet.new()), base_port)
        used = Map.update(used, hostname, MapSet.new([port]), &MapSet.put(&1, port))

        {%{
           index: index,
           host: host,
           hostname: hostname,
           name: :"#{prefix}#{index}@#{hostname}",
           http_port: port
         }, used}
      end)

    slots
  end

  @doc """
  The host of each of `count` nodes, in node order: `:round_robin` cycles through `hosts`;
  `{:counts, [{host, n}]}` puts `n` nodes on each host, in that order; a function gets the
  node's index and the hosts and returns one of them.

      iex> Tether.TestCluster.Placement.hosts_for(3, [:a, :b], {:counts, [a: 1, b: 2]})
      [:a, :b, :b]
      iex> Tether.TestCluster.Placement.hosts_for(3, [:a, :b], fn _i, hosts -> List.last(hosts) end)
      [:b, :b, :b]
  """
  @spec hosts_for(pos_integer, [node], placement) :: [node]
  def hosts_for(count, hosts, :round_robin) do
    for i <- 1..count, do: Enum.at(hosts, rem(i - 1, length(hosts)))
  end

  def hosts_for(_count, _hosts, {:counts, counts}) do
    Enum.flat_map(counts, fn {host, n} -> List.duplicate(host, n) end)
  end

  def hosts_for(count, hosts, fun) when is_function(fun, 2) do
    for i <- 1..count do
      host = fun.(i, hosts)

      host in hosts or
        raise ArgumentError,
              "the :placement function returned #{inspect(host)} for node #{i}, " <>
                "which is not one of the :hosts"

      host
    end
  end

  @doc "The lowest port above `base_port` that is not in `used`."
  @spec next_port(MapSet.t(), pos_integer) :: :inet.port_number()
  def next_port(used, base_port) do
    Stream.iterate(base_port + 1, &(&1 + 1)) |> Enum.find(&(not MapSet.member?(used, &1)))
  end

  @doc """
  The host part of a node name.

      iex> Tether.TestCluster.Placement.hostname(:"agent1@10.0.0.2")
      "10.0.0.2"
  """
  @spec hostname(node) :: String.t()
  def hostname(node), do: node |> Atom.to_string() |> String.split("@") |> List.last()
end
