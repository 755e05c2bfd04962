defmodule Tether.TestClusterPlacementTest do
  use ExUnit.Case, async: true

  alias Tether.TestCluster.{Manager, Placement}

  doctest Placement
  doctest Tether.TestCluster.NodeSpec
  doctest Tether.TestCluster.OutputBuffer

  test "ports are allocated per hostname; agents sharing one share its ports" do
    hosts = [:a@h1, :b@h2, :c@h1]
    slots = Placement.plan(6, hosts, :round_robin, 5000, "n")
    assert Enum.map(slots, & &1.host) == hosts ++ hosts
    assert Enum.map(slots, & &1.name) == [:n1@h1, :n2@h2, :n3@h1, :n4@h1, :n5@h2, :n6@h1]
    # h1 has four nodes (two agents), h2 two.
    assert Enum.map(slots, & &1.http_port) == [5001, 5001, 5002, 5003, 5002, 5004]
  end

  test "a placement function's answer must be one of the hosts" do
    assert_raise ArgumentError, ~r/:placement function returned :z@h for node 1/, fn ->
      Placement.plan(2, [:a@h], fn _, _ -> :z@h end, 5000, "n")
    end
  end

  test "bad host options name the option" do
    assert_raise ArgumentError, ~r/:hosts/, fn -> Manager.start_cluster(hosts: []) end
    assert_raise ArgumentError, ~r/:hosts/, fn -> Manager.start_cluster(hosts: [:no_at]) end
    assert_raise ArgumentError, ~r/:hosts/, fn -> Manager.start_cluster(hosts: [:a@h, :a@h]) end

    assert_raise ArgumentError, ~r/:hosts/, fn ->
      Manager.start_cluster(hosts: [{:a@h, 0}])
    end

    assert_raise ArgumentError, ~r/:node_count.*add up to 3/, fn ->
      Manager.start_cluster(hosts: [{:a@h, 1}, {:b@h, 2}], node_count: 2)
    end

    assert_raise ArgumentError, ~r/:placement.*needs :hosts/, fn ->
      Manager.start_cluster(placement: fn _, _ -> nil end)
    end

    assert_raise ArgumentError, ~r/:placement/, fn ->
      Manager.start_cluster(hosts: [:a@h], placement: :random)
    end

    assert_raise ArgumentError, ~r/:on_host_down/, fn ->
      Manager.start_cluster(hosts: [:a@h], on_host_down: :retry)
    end

    assert_raise ArgumentError, ~r/:stop_timeout/, fn ->
      Manager.start_cluster(stop_timeout: 0)
    end
  end
end

defmodule Tether.TestClusterHostsTest do
  # Several hosts, simulated by agent VMs on this machine (distinct names on 127.0.0.1),
  # started by the test; the nodes' OS processes run on the agents. Slow: `make test`.
  use ExUnit.Case, async: false
  import Tether.OsHelpers

  alias Tether.TestCluster.{Agent, Health, Manager}

  @moduletag :slow_cluster
  @moduletag timeout: 180_000

  @cookie :tether_hosts_test

  setup do
    distribute!()
    on_exit(fn -> Manager.stop_cluster() end)
    uniq = System.unique_integer([:positive])
    %{prefix: "ht#{uniq}n", port: 20_000 + :rand.uniform(12_000), uniq: uniq}
  end

  # This VM goes distributed (and epmd runs) before any agent boots: agents are started with
  # -start_epmd false, so none of them, Tether children all, can be the one to start epmd.
  defp distribute! do
    unless Node.alive?() do
      {_, 0} = System.cmd("epmd", ["-daemon"])
      {:ok, _} = Node.start(:"hosts_test_#{System.unique_integer([:positive])}@127.0.0.1")
    end

    assert {"epmd: up and running" <> _, 0} = System.cmd("epmd", ["-names"])
  end

  # Starts agents; returns `[{name, os_pid}]` once each says it is ready. They are gone before
  # the next test starts (so that no test sees another's children in `which_processes/0`).
  defp start_agents!(uniq, count, command \\ &Agent.command/2, options \\ []) do
    agents = do_start_agents!(uniq, count, command, options)

    on_exit(fn ->
      Manager.stop_cluster()
      Enum.each(agents, fn {_, os_pid} -> Tether.stop(os_pid) end)
      pids = Enum.map(agents, &elem(&1, 1))

      true = wait_until(fn -> Enum.all?(pids, &(&1 not in Tether.which_processes())) end, 10_000)
    end)

    agents
  end

  defp do_start_agents!(uniq, count, command, options) do
    for i <- 1..count do
      name = :"agent#{uniq}_#{i}@127.0.0.1"
      run_options = [:stdout, {:stderr, :stdout}, :monitor, kill_timeout: 1] ++ options
      {:ok, _, os_pid} = Tether.run(command.(name, @cookie), run_options)
      {name, os_pid}
    end
    |> Enum.map(fn {name, os_pid} ->
      await_line(os_pid, "tether agent #{name} ready")
      {name, os_pid}
    end)
  end

  # Waits for `line` in the output of `os_pid`; returns the output so far.
  defp await_line(os_pid, line, seen \\ "") do
    if String.contains?(seen, line <> "\n") do
      seen
    else
      receive do
        {:stdout, ^os_pid, data} -> await_line(os_pid, line, seen <> data)
        {:DOWN, ^os_pid, :process, _, reason} -> flunk("exited (#{inspect(reason)}): #{seen}")
      after
        60_000 -> flunk("no #{inspect(line)} from #{os_pid}: #{seen}")
      end
    end
  end

  defp ppid(os_pid) do
    [_, rest] = File.read!("/proc/#{os_pid}/stat") |> String.split(") ", parts: 2)
    [_state, ppid | _] = String.split(rest, " ")
    String.to_integer(ppid)
  end

  defp on_agent(agent, m, f, a) do
    :erlang.set_cookie(agent, @cookie)
    true = :net_kernel.hidden_connect_node(agent)
    :erpc.call(agent, m, f, a)
  end

  defp nothing_left_on?(agent, os_pids) do
    wait_gone(os_pids, 10_000) == [] and Manager.group_members(os_pids) == [] and
      wait_until(fn -> on_agent(agent, Tether, :which_processes, []) == [] end, 10_000)
  end

  test "2 agents, 4 nodes: placed round-robin, a node crash is restarted on its agent, " <>
         "an agent crash reports its nodes, stop leaves nothing",
       %{prefix: prefix, port: port, uniq: uniq} do
    [{a1, a1_os}, {a2, a2_os}] = start_agents!(uniq, 2)

    assert {:ok, nodes} =
             Manager.start_cluster(
               hosts: [a1, a2],
               node_count: 4,
               cookie: @cookie,
               name_prefix: prefix,
               base_http_port: port,
               restart_backoff: 100,
               kill_timeout: 1
             )

    assert Enum.map(nodes, fn {name, info} -> {name, info.host} end) == [
             {:"#{prefix}1@127.0.0.1", a1},
             {:"#{prefix}2@127.0.0.1", a2},
             {:"#{prefix}3@127.0.0.1", a1},
             {:"#{prefix}4@127.0.0.1", a2}
           ]

    assert Manager.nodes() == nodes
    # Both agents are on 127.0.0.1: one host address, one port space.
    assert Enum.map(nodes, fn {_, info} -> info.http_port end) ==
             Enum.to_list((port + 1)..(port + 4))

    [{n1, i1}, {n2, i2}, {n3, i3}, {n4, i4}] = nodes

    for {name, info} <- nodes do
      # The node's VM is a child of its agent's VM, not of this one.
      assert ppid(info.os_pid) == if(info.host == a1, do: a1_os, else: a2_os)
      assert node(info.exec_pid) == info.host
      assert name in Node.list()
      assert Health.http_get(info.url <> "/health") == :ok
      assert :rpc.call(name, System, :get_env, ["PORT"]) == Integer.to_string(info.http_port)
      assert :rpc.call(name, System, :get_env, ["NODE_NAME"]) == Atom.to_string(name)
    end

    # The agents are hidden: `global` never sees them, the nodes are not connected to them.
    assert a1 in Node.list(:hidden) and a1 not in Node.list()
    refute a1 in :rpc.call(n2, Node, :list, [:connected])

    # A node SIGKILLed on agent 2 is restarted there.
    :ok = Tether.kill(i2.exec_pid, :sigkill)
    assert_receive {:node_crashed, ^n2, {:signal, :sigkill, false}}, 5000
    assert_receive {:node_restarted, ^n2, %{host: ^a2, restart_count: 1} = r2}, 30_000
    assert ppid(r2.os_pid) == a2_os and r2.os_pid != i2.os_pid
    assert wait_gone([i2.os_pid]) == []

    # Agent 1 SIGKILLed: both its nodes reported, given up, and gone from the "host".
    :ok = Tether.kill(a1_os, :sigkill)
    assert_receive {:node_crashed, ^n1, {:nodedown, ^a1}}, 10_000
    assert_receive {:node_crashed, ^n3, {:nodedown, ^a1}}, 10_000
    assert_receive {:node_failed, ^n1}, 5000
    assert_receive {:node_failed, ^n3}, 5000
    assert wait_gone([a1_os, i1.os_pid, i3.os_pid], 10_000) == []
    assert Manager.group_members([i1.os_pid, i3.os_pid]) == []
    assert {:ok, %{status: :failed, host: ^a1, os_pid: nil}} = Manager.status(n1)

    # Agent 2's nodes live on, and still answer.
    assert {:ok, %{status: :running, os_pid: os_pid2}} = Manager.status(n2)
    assert {:ok, %{status: :running}} = Manager.status(n4)
    assert alive?(os_pid2) and alive?(i4.os_pid)
    assert Node.ping(n4) == :pong and Health.http_get(i4.url <> "/health") == :ok

    assert Manager.stop_cluster() == :ok
    assert Manager.nodes() == []
    assert wait_gone([os_pid2, i4.os_pid], 0) == []
    assert Manager.group_members([os_pid2, i4.os_pid]) == []
    assert on_agent(a2, Tether, :which_processes, []) == []
    assert alive?(a2_os)
  end

  test "an agent cut off stops its nodes itself; with on_host_down: :move they restart " <>
         "elsewhere, and the agent coming back brings no stale node",
       %{prefix: prefix, port: port, uniq: uniq} do
    [{a1, _}, {a2, a2_os}] = start_agents!(uniq, 2)

    {:ok, [{n1, i1}, {n2, _}]} =
      Manager.start_cluster(
        hosts: [a1, a2],
        node_count: 2,
        cookie: @cookie,
        name_prefix: prefix,
        base_http_port: port,
        on_host_down: :move,
        # The old n1 (same name on the same 127.0.0.1) must have left epmd first.
        restart_backoff: 1500,
        kill_timeout: 1
      )

    assert i1.host == a1
    true = Node.disconnect(a1)
    assert_receive {:node_crashed, ^n1, {:nodedown, ^a1}}, 5000
    # Cut off from us, agent 1 stopped the node it ran for us.
    assert wait_gone([i1.os_pid], 10_000) == []

    assert_receive {:node_restarted, ^n1, %{host: ^a2, restart_count: 1} = moved}, 30_000
    assert ppid(moved.os_pid) == a2_os
    assert :rpc.call(n1, System, :pid, []) == Integer.to_string(moved.os_pid)
    assert Health.http_get(moved.url <> "/health") == :ok

    # Agent 1 is back: nothing of ours runs there, and n1 stays where it moved.
    assert on_agent(a1, Tether, :which_processes, []) == []
    assert [{^n1, %{host: ^a2, status: :running}}, {^n2, %{host: ^a2}}] = Manager.nodes()
    refute_receive {:node_restarted, _, _}, 500

    pids = for {_, info} <- Manager.nodes(), do: info.os_pid
    assert Manager.stop_cluster() == :ok
    assert wait_gone(pids, 0) == [] and Manager.group_members(pids) == []
    assert on_agent(a2, Tether, :which_processes, []) == []
  end

  test "the manager's VM SIGKILLed: every node on every agent is stopped",
       %{prefix: prefix, port: port, uniq: uniq} do
    agents = start_agents!(uniq, 2)
    [a1, a2] = Enum.map(agents, &elem(&1, 0))
    manager = :"manager#{uniq}@127.0.0.1"

    script = """
    {:ok, _} = Application.ensure_all_started(:tether)
    {:ok, nodes} = Tether.TestCluster.Manager.start_cluster(hosts: [#{inspect(a1)}, #{inspect(a2)}],
      node_count: 4, cookie: #{inspect(@cookie)}, name_prefix: "#{prefix}", base_http_port: #{port},
      kill_timeout: 1)
    for {_, info} <- nodes, do: IO.puts("node \#{info.os_pid}")
    IO.puts("cluster up")
    """

    ebin = Path.join(:code.lib_dir(:tether), "ebin")

    argv =
      ["elixir", "--erl", "-start_epmd false", "--name", "#{manager}", "--cookie", "#{@cookie}"] ++
        ["--no-halt", "-pa", ebin, "-e", script]

    {:ok, _, manager_os} =
      Tether.run(argv, [:stdout, {:stderr, :stdout}, :monitor, kill_timeout: 1])

    output = await_line(manager_os, "cluster up")

    node_pids =
      for ["node", pid] <- Enum.map(String.split(output, "\n"), &String.split/1),
          do: String.to_integer(pid)

    assert length(node_pids) == 4
    assert Enum.all?(node_pids, &alive?/1)

    :ok = Tether.kill(manager_os, :sigkill)
    assert_receive {:DOWN, ^manager_os, :process, _, {:signal, :sigkill, false}}, 5000
    assert nothing_left_on?(a1, node_pids)
    assert nothing_left_on?(a2, node_pids)
    assert Enum.all?(agents, fn {_, os_pid} -> alive?(os_pid) end)
  end

  test "stop_cluster names the host that did not answer; its nodes go once it does",
       %{prefix: prefix, port: port, uniq: uniq} do
    [{a1, _}, {a2, a2_os}] = start_agents!(uniq, 2)

    {:ok, [{_, i1}, {n2, i2}]} =
      Manager.start_cluster(
        hosts: [a1, a2],
        node_count: 2,
        cookie: @cookie,
        name_prefix: prefix,
        base_http_port: port,
        kill_timeout: 1,
        stop_timeout: 1500
      )

    # A frozen agent: connected, but it answers nothing.
    :ok = Tether.kill(a2_os, :sigstop)
    started = System.monotonic_time(:millisecond)
    assert Manager.stop_cluster() == {:error, {:hosts_not_answering, [a2]}}
    assert System.monotonic_time(:millisecond) - started < 5000
    assert wait_gone([i1.os_pid], 0) == [] and Manager.group_members(i1.os_pid) == []
    assert alive?(i2.os_pid)
    assert [{^n2, %{status: :stopping}}] = Manager.nodes()

    # Thawed, the agent runs the stop it was sent; the manager then forgets the node.
    :ok = Tether.kill(a2_os, :sigcont)
    assert wait_gone([i2.os_pid], 10_000) == []
    assert wait_until(fn -> Manager.nodes() == [] end, 5000)
    assert on_agent(a2, Tether, :which_processes, []) == []
  end

  test "`mix tether.agent` makes a host; per-host counts place the nodes; the manager " <>
         "killed, its nodes are stopped",
       %{prefix: prefix, port: port, uniq: uniq} do
    root = Path.expand("../..", __DIR__)

    mix_agent = fn name, cookie ->
      ["elixir", "--erl", "-start_epmd false", "--name", "#{name}", "--cookie", "#{cookie}"] ++
        ["--hidden", "-S", "mix", "tether.agent", "--no-compile"]
    end

    [{agent, agent_os}] =
      start_agents!(uniq, 1, mix_agent, cd: root, env: [{"MIX_ENV", "#{Mix.env()}"}])

    assert {:ok, [{n1, i1}, {n2, i2}]} =
             Manager.start_cluster(
               hosts: [{agent, 2}],
               cookie: @cookie,
               name_prefix: prefix,
               base_http_port: port,
               kill_timeout: 1
             )

    assert i1.host == agent and i2.host == agent
    assert ppid(i1.os_pid) == agent_os and ppid(i2.os_pid) == agent_os
    assert n1 in Node.list() and n2 in Node.list()

    # The manager process killed (its VM lives on): the agent stops the nodes it ran for it.
    manager = Process.whereis(Manager)
    ref = Process.monitor(manager)
    Process.exit(manager, :kill)
    assert_receive {:DOWN, ^ref, :process, ^manager, :killed}
    assert nothing_left_on?(agent, [i1.os_pid, i2.os_pid])
  end

  test "an agent that cannot be reached is reported before anything starts" do
    assert Manager.start_cluster(hosts: [:"nobody@127.0.0.1"], cookie: @cookie) ==
             {:error, {:host_unreachable, :"nobody@127.0.0.1"}}
  end
end
