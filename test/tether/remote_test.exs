defmodule Tether.RemoteTest do
  # OS processes on other nodes, with real nodes started by the TestCluster manager.
  use ExUnit.Case, async: false
  import Tether.OsHelpers

  alias Tether.TestCluster.Manager

  @moduletag :slow_cluster
  @moduletag timeout: 180_000

  setup_all do
    [{name, _info}] = start_test_cluster!("rt", 1, max_restarts: 0)
    on_exit(fn -> Manager.stop_cluster() end)
    %{node: name}
  end

  test "output and the exit arrive from the remote node, in order", %{node: node} do
    {:ok, pid, os_pid} =
      Manager.run_on(node, "seq 1 10000; echo err >&2; exit 3", [:stdout, :stderr, :monitor])

    assert node(pid) == node
    expected = Enum.map_join(1..10_000, &"#{&1}\n")
    assert {^expected, "err\n", {:exit_status, 3}} = collect(os_pid)
  end

  test "stop, kill, status, send and info accept the remote pid", %{node: node} do
    {:ok, pid, os_pid} = Tether.run(["cat"], [:stdin, :stdout, :monitor, node: node])
    assert Tether.status(pid) == {:status, :running}
    assert Tether.os_pid(pid) == {:ok, os_pid}
    assert Tether.send(pid, "ping\n") == :ok
    assert_receive {:stdout, ^os_pid, "ping\n"}, 5000
    assert %{os_pid: ^os_pid, command: ["cat"]} = Tether.info(pid)
    assert Tether.kill(pid, :sigusr1) == :ok
    assert_receive {:DOWN, ^os_pid, :process, ^pid, {:signal, :sigusr1, false}}, 5000
    assert Tether.stop(pid) == {:error, :no_process}
  end

  test "sync, cmd and streams work across nodes", %{node: node} do
    assert Tether.run("echo remote", [:sync, :stdout, node: node]) ==
             {:ok, [stdout: ["remote\n"]]}

    assert Tether.cmd("sh", ["-c", "echo $((6 * 7))"], node: node) == {"42\n", 0}
    assert Tether.stream!(["seq", "1", "3"], node: node) |> Enum.join() == "1\n2\n3\n"
  end

  test "killing the caller stops the remote process", %{node: node} do
    parent = self()

    caller =
      spawn(fn ->
        {:ok, _, os_pid} = Manager.run_on(node, ["sleep", "100"])
        send(parent, {:os_pid, os_pid})
        Process.sleep(:infinity)
      end)

    assert_receive {:os_pid, os_pid}, 10_000
    assert alive?(os_pid)
    Process.exit(caller, :kill)
    # Same host: the remote node's child is visible in our /proc.
    assert wait_gone([os_pid]) == []
  end

  test "remote throughput (reported with TETHER_REPORT=1)", %{node: node} do
    bytes = 100_000_000
    started = System.monotonic_time(:microsecond)

    {:ok, _, os_pid} =
      Tether.run(["head", "-c", "#{bytes}", "/dev/zero"], [:stdout, :monitor, node: node])

    assert count(os_pid, 0) == bytes
    mb_per_s = bytes / (System.monotonic_time(:microsecond) - started)

    if System.get_env("TETHER_REPORT"),
      do: IO.puts("\n  remote stdout: #{Float.round(mb_per_s, 1)} MB/s")
  end

  test "bad input" do
    assert_raise ArgumentError, ~r/:node option/, fn -> Tether.run(["true"], node: "n1") end
    assert Tether.run(["true"], node: :"nobody@127.0.0.1") == {:error, :nodedown}
    assert {:error, _} = Tether.run(["true"], node: :not_a_node_name)

    assert_raise ArgumentError, ~r/funs and :print/, fn ->
      Tether.run(["true"], stdout: :print, node: :"x@127.0.0.1")
    end

    assert_raise ArgumentError, ~r/background_jobs/, fn ->
      Tether.run(["true"], background_jobs: {:keep, self()}, node: :"x@127.0.0.1")
    end
  end

  defp count(os_pid, n) do
    receive do
      {:stdout, ^os_pid, data} -> count(os_pid, n + byte_size(data))
      {:DOWN, ^os_pid, :process, _, :normal} -> n
    after
      30_000 -> flunk("stalled at #{n}")
    end
  end
end

defmodule Tether.RemoteNodedownTest do
  # A module of its own: killing a node makes OTP 25's `global` drop connections to the nodes
  # that knew it, so no other test's node may be connected meanwhile.
  use ExUnit.Case, async: false
  import Tether.OsHelpers

  alias Tether.TestCluster.Manager

  @moduletag :slow_cluster
  @moduletag timeout: 180_000

  test "the remote node going down gives {:nodedown, node}" do
    [{node, info}] = start_test_cluster!("rd", 1, max_restarts: 0)
    on_exit(fn -> Manager.stop_cluster() end)
    {:ok, pid, os_pid} = Manager.run_on(node, ["sleep", "100"], [:monitor])
    :ok = Tether.kill(info.os_pid, :sigkill)
    assert_receive {:DOWN, ^os_pid, :process, ^pid, {:nodedown, ^node}}, 10_000
    # The remote VM's watchdog took its children down with it.
    assert wait_gone([os_pid]) == []
  end
end
