defmodule Tether.TestClusterTest do
  # Real BEAM nodes as OS processes. Slow (each node boots a VM): tagged, run by `make test`.
  use ExUnit.Case, async: false
  import Tether.OsHelpers

  alias Tether.TestCluster.{Health, Manager, NodeSpec}

  @moduletag :slow_cluster
  @moduletag timeout: 180_000

  setup do
    on_exit(fn -> Manager.stop_cluster() end)
    # Distinct names and ports per test: a node of a previous test may still be leaving epmd.
    # Ports below 32768, where Linux picks no ephemeral source ports.
    prefix = "tt#{System.unique_integer([:positive])}n"
    %{prefix: prefix, port: 20_000 + :rand.uniform(12_000)}
  end

  defp node_pids(nodes), do: for({_, info} <- nodes, do: info.os_pid)

  test "start 2 nodes: both join and answer HTTP; stop leaves nothing", %{
    prefix: prefix,
    port: port
  } do
    assert {:ok, nodes} =
             TestCluster.Manager.start_cluster(
               node_count: 2,
               name_prefix: prefix,
               base_http_port: port
             )

    assert [{n1, i1}, {n2, i2}] = nodes
    assert n1 == :"#{prefix}1@127.0.0.1" and n2 == :"#{prefix}2@127.0.0.1"
    assert n1 in Node.list() and n2 in Node.list()

    assert %{http_port: p1, url: "http://127.0.0.1:" <> _, status: :running, restart_count: 0} =
             i1

    assert p1 == port + 1 and i2.http_port == port + 2
    assert Health.http_get(i1.url <> "/health") == :ok
    assert Health.http_get(i2.url <> "/health") == :ok
    assert is_pid(i1.exec_pid) and Tether.status(i1.os_pid) == {:status, :running}
    # The node really got the environment of our users' design.
    assert :rpc.call(n1, System, :get_env, ["PHX_PORT"]) == Integer.to_string(p1)
    assert :rpc.call(n2, System, :get_env, ["NODE_NAME"]) == Atom.to_string(n2)

    pids = node_pids(nodes)
    groups = Enum.flat_map(pids, &group_members/1)
    assert :ok = Manager.stop_cluster()
    assert wait_gone(pids ++ groups, 0) == []
    assert Enum.flat_map(pids, &group_members/1) == []
    assert Tether.which_processes() == []
    refute n1 in Node.list()
  end

  test "a SIGKILLed node is detected, restarted and rejoins", %{prefix: prefix, port: port} do
    {:ok, [{name, info}]} =
      Manager.start_cluster(
        node_count: 1,
        name_prefix: prefix,
        base_http_port: port,
        restart_backoff: 100
      )

    :ok = Tether.kill(info.os_pid, :sigkill)
    assert_receive {:node_crashed, ^name, {:signal, :sigkill, false}}, 5000
    assert_receive {:node_restarted, ^name, restarted}, 30_000
    assert restarted.restart_count == 1 and restarted.os_pid != info.os_pid
    assert name in Node.list()
    assert Health.http_get(restarted.url <> "/health") == :ok
    assert {:ok, %{status: :running, restart_count: 1}} = Manager.status(name)
    refute alive?(info.os_pid)
  end

  test "a node that keeps crashing is given up after 3 restarts", %{prefix: prefix, port: port} do
    {:ok, [{name, info}]} =
      Manager.start_cluster(
        node_count: 1,
        name_prefix: prefix,
        base_http_port: port,
        restart_backoff: 50
      )

    os_pid =
      Enum.reduce(1..3, info.os_pid, fn n, os_pid ->
        :ok = Tether.kill(os_pid, :sigkill)
        assert_receive {:node_crashed, ^name, {:signal, :sigkill, false}}, 5000
        assert_receive {:node_restarted, ^name, %{restart_count: ^n, os_pid: new}}, 30_000
        new
      end)

    :ok = Tether.kill(os_pid, :sigkill)
    assert_receive {:node_crashed, ^name, {:signal, :sigkill, false}}, 5000
    assert_receive {:node_failed, ^name}, 5000
    refute_receive {:node_restarted, ^name, _}, 1000
    assert {:ok, %{status: :failed, restart_count: 3, os_pid: nil}} = Manager.status(name)
    assert Tether.which_processes() == []
  end

  test "a node whose command fails to boot is reported, not retried", %{
    prefix: prefix,
    port: port
  } do
    failing = {:command, fn _spec -> ["sh", "-c", "echo cannot boot >&2; exit 1"] end}

    assert {:error, {:node_connection_failed, name}} =
             Manager.start_cluster(
               node_count: 2,
               name_prefix: prefix,
               base_http_port: port,
               boot: failing
             )

    assert name in [:"#{prefix}1@127.0.0.1", :"#{prefix}2@127.0.0.1"]
    refute_receive {:node_crashed, _, _}, 500
    assert Tether.which_processes() == []
  end

  test "a node that never joins is stopped after boot_timeout", %{prefix: prefix, port: port} do
    silent = {:command, fn _spec -> ["sleep", "1000"] end}
    started = System.monotonic_time(:millisecond)

    assert {:error, {:node_connection_failed, _}} =
             Manager.start_cluster(
               node_count: 1,
               name_prefix: prefix,
               base_http_port: port,
               boot: silent,
               boot_timeout: 1000
             )

    assert System.monotonic_time(:millisecond) - started < 8000
    assert Tether.which_processes() == []
  end

  test "output goes to a bounded buffer of the last 1,000 lines", %{prefix: prefix, port: port} do
    chatty =
      {:command,
       fn spec ->
         {argv, _} = NodeSpec.command(%{spec | boot: :elixir})
         argv ++ ["-e", "Enum.each(1..5000, &IO.puts(\"line \#{&1}\"))"]
       end}

    {:ok, [{name, _}]} =
      Manager.start_cluster(
        node_count: 1,
        name_prefix: prefix,
        base_http_port: port,
        boot: chatty
      )

    assert wait_until(fn -> List.last(Manager.output(name)) == {:stdout, "line 5000"} end, 10_000)
    lines = Manager.output(name)
    assert length(lines) == 1000
    assert hd(lines) == {:stdout, "line 4001"}
  end

  test "health checks see each node", %{prefix: prefix, port: port} do
    {:ok, [{name, _}]} =
      Manager.start_cluster(node_count: 1, name_prefix: prefix, base_http_port: port)

    assert [{^name, %{health: %{os: :running, ping: :pong, http: :ok}}}] = Manager.check_health()
  end

  test "bad options name the option" do
    assert_raise ArgumentError, ~r/:node_count/, fn -> Manager.start_cluster(node_count: 0) end

    assert_raise ArgumentError, ~r/unknown option :nodes/, fn ->
      Manager.start_cluster(nodes: 2)
    end

    assert_raise ArgumentError, ~r/:boot/, fn ->
      Manager.start_cluster(boot: {:mix_run, "/nonexistent"})
    end
  end

  test ":mix_run boots nodes exactly as our users' design does", %{prefix: prefix, port: port} do
    app = Path.expand("../fixtures/cluster_app", __DIR__)

    {_, 0} =
      System.cmd("mix", ["compile"], cd: app, env: [{"MIX_ENV", "dev"}], stderr_to_stdout: true)

    {:ok, nodes} =
      Manager.start_cluster(
        node_count: 2,
        name_prefix: prefix,
        base_http_port: port,
        boot: {:mix_run, app}
      )

    for {name, info} <- nodes do
      assert name in Node.list()
      assert wait_until(fn -> Health.http_get(info.url <> "/health") == :ok end, 10_000)
      assert {:ok, ["-S", "mix", "run", "--no-halt"]} == tail_of_cmdline(info.os_pid)
    end

    pids = node_pids(nodes)
    assert :ok = Manager.stop_cluster()
    assert wait_gone(pids, 0) == []
  end

  defp tail_of_cmdline(os_pid) do
    args = File.read!("/proc/#{os_pid}/cmdline") |> String.split(<<0>>, trim: true)
    {:ok, Enum.take(args, -4)}
  end
end
