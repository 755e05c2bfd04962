defmodule Tether.OutputTest do
  use ExUnit.Case, async: true
  import Tether.OsHelpers

  test "seq 1 200000 arrives byte-exact, in order, before the DOWN" do
    {:ok, _, os_pid} = Tether.run(["seq", "1", "200000"], [:stdout, :monitor])
    expected = Enum.map_join(1..200_000, fn i -> "#{i}\n" end)
    assert {^expected, "", :normal} = collect(os_pid)
  end

  test "100 MB counts exactly" do
    {:ok, _, os_pid} = Tether.run(["head", "-c", "100000000", "/dev/zero"], [:stdout, :monitor])
    assert count_bytes(os_pid, 0) == {100_000_000, :normal}
  end

  test "output written just before a kill is still delivered" do
    {:ok, _, os_pid} = Tether.run("seq 1 1000; kill -9 $$", [:stdout, :monitor])
    expected = Enum.map_join(1..1000, fn i -> "#{i}\n" end)
    assert {^expected, "", {:signal, :sigkill, false}} = collect(os_pid)
  end

  test "stdout and stderr go to their own destinations" do
    parent = self()
    collector = spawn_link(fn -> forward_to(parent) end)

    {:ok, _, os_pid} =
      Tether.run("echo out; echo err >&2", [:monitor, stdout: {:send, collector}, stderr: self()])

    assert_receive {:stderr, ^os_pid, "err\n"}, 5000
    assert_receive {:forwarded, {:stdout, ^os_pid, "out\n"}}, 5000
    assert_receive {:DOWN, ^os_pid, :process, _, :normal}, 5000
    refute_received {:stdout, ^os_pid, _}
  end

  test "streams are discarded unless asked for" do
    {:ok, _, os_pid} = Tether.run("echo out; echo err >&2", [:monitor])
    assert_receive {:DOWN, ^os_pid, :process, _, :normal}, 5000
    refute_received {:stdout, _, _}
    refute_received {:stderr, _, _}
  end

  test "a child that writes to a discarded stream does not block" do
    {:ok, _, os_pid} =
      Tether.run(["head", "-c", "10000000", "/dev/zero"], [:monitor, stdout: :null])

    assert_receive {:DOWN, ^os_pid, :process, _, :normal}, 10_000
  end

  test "the exit is reported promptly while a grandchild holds stdout open" do
    started = System.monotonic_time(:millisecond)
    {:ok, _, os_pid} = Tether.run("sleep 5 & echo parent done", [:stdout, :monitor])
    assert {"parent done\n", "", :normal} = collect(os_pid)
    # Waiting for the pipe's EOF would take the grandchild's 5 s.
    assert System.monotonic_time(:millisecond) - started < 4000
  end

  defp count_bytes(os_pid, n) do
    receive do
      {:stdout, ^os_pid, data} -> count_bytes(os_pid, n + byte_size(data))
      {:DOWN, ^os_pid, :process, _, reason} -> {n, reason}
    after
      20_000 -> flunk("stalled after #{n} bytes")
    end
  end

  defp forward_to(parent) do
    receive do
      message -> send(parent, {:forwarded, message})
    end

    forward_to(parent)
  end
end
