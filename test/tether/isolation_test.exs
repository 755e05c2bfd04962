defmodule Tether.IsolationTest do
  # Counts descriptors and threads of the VM: not async.
  use ExUnit.Case, async: false
  import Tether.OsHelpers

  # Each probe is its own program, run directly: a shell would add descriptors of its own.
  test "children start with only fds 0-2, though the VM has many open" do
    assert length(File.ls!("/proc/self/fd")) > 10
    {:ok, _, os_pid} = Tether.run(["ls", "/proc/self/fd"], [:stdout, :monitor])
    # 3 is the directory `ls` itself opened to list.
    assert {"0\n1\n2\n3\n", "", :normal} = collect(os_pid)
  end

  test "children start with no ignored and no blocked signal" do
    {:ok, _, os_pid} =
      Tether.run(["grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"], [:stdout, :monitor])

    assert {"SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n", "", :normal} =
             collect(os_pid)
  end

  test "each child leads its own process group" do
    {:ok, _, os_pid} = Tether.run(["cat", "/proc/self/stat"], [:stdout, :monitor])
    {stat, "", :normal} = collect(os_pid)
    [_, rest] = String.split(stat, ") ", parts: 2)
    [_state, _ppid, pgid | _] = String.split(rest, " ")
    assert String.to_integer(pgid) == os_pid
  end

  test "the VM really ignores SIGPIPE, and the child does not inherit that" do
    # Without the reset, `yes | head -c1` prints "Broken pipe" errors and exits non-zero.
    {:ok, _, os_pid} =
      Tether.run("yes | head -c1; echo \" status=$?\"", [:stdout, :stderr, :monitor])

    assert {"y status=0\n", "", :normal} = collect(os_pid)
  end

  test "stop reaches grandchildren through the process group" do
    {:ok, _, os_pid} = Tether.run([script("grandchild.sh")], [:stdout, :monitor])
    grandchild = os_pid |> first_line() |> String.to_integer()
    assert alive?(grandchild)
    assert group_members(os_pid) |> Enum.sort() == Enum.sort([os_pid, grandchild])
    :ok = Tether.stop(os_pid)
    assert_receive {:DOWN, ^os_pid, :process, _, {:signal, :sigterm, false}}, 5000
    assert wait_gone([grandchild]) == []
    assert group_members(os_pid) == []
  end

  test "kill reaches grandchildren; kill_group: false reaches only the child" do
    {:ok, _, os_pid} = Tether.run([script("grandchild.sh")], [:stdout, :monitor])
    grandchild = os_pid |> first_line() |> String.to_integer()
    :ok = Tether.kill(os_pid, :sigkill)
    assert_receive {:DOWN, ^os_pid, _, _, {:signal, :sigkill, false}}, 5000
    assert wait_gone([grandchild]) == []

    # Kept after the child's exit, so that only the kill itself is judged here.
    options = [:stdout, :monitor, kill_group: false, background_jobs: :keep]
    {:ok, _, os_pid} = Tether.run([script("grandchild.sh")], options)

    grandchild = os_pid |> first_line() |> String.to_integer()
    :ok = Tether.kill(os_pid, :sigkill)
    assert_receive {:DOWN, ^os_pid, _, _, {:signal, :sigkill, false}}, 5000
    assert alive?(grandchild)
    System.cmd("kill", ["-9", "#{grandchild}"])
  end

  test "one event-loop thread serves every child: the thread count stays flat" do
    # Warm up: the first run starts the event loop.
    {:ok, _, os_pid} = Tether.run(["true"], [:monitor])
    assert_receive {:DOWN, ^os_pid, _, _, _}, 5000
    threads = thread_count()

    children =
      for _ <- 1..100 do
        {:ok, _, os_pid} = Tether.run(["sleep", "100"], [:monitor, :stdout])
        os_pid
      end

    assert thread_count() == threads
    Enum.each(children, &Tether.stop/1)
    for os_pid <- children, do: assert_receive({:DOWN, ^os_pid, _, _, _}, 5000)
  end

  test "no descriptor leaks: the VM's fd count returns to its baseline" do
    {:ok, _, os_pid} = Tether.run(["true"], [:monitor, :stdout, :stderr])
    assert_receive {:DOWN, ^os_pid, _, _, _}, 5000
    fds = open_fds()

    for _ <- 1..200 do
      {:ok, _, os_pid} = Tether.run(["true"], [:monitor, :stdout, :stderr])
      assert_receive {:DOWN, ^os_pid, _, _, _}, 5000
    end

    {:error, :enoent} = Tether.run(["/nonexistent"], [:stdout, :stderr])
    assert MapSet.difference(open_fds(), fds) == MapSet.new()
    # The spares' directories are a bounded pool, not a leak (a janitor of a root configured
    # again may still be letting go of its own).
    assert wait_until(fn -> spare_cgroup_fds() <= 4 end)
  end

  test "no NIF call holds a scheduler for long" do
    {_, native_long} =
      native_long_schedules(10, fn ->
        for _ <- 1..200 do
          {:ok, _, os_pid} = Tether.run(["true"], [:monitor, :stdout])
          Tether.status(os_pid)
          Tether.which_processes()
          assert_receive {:DOWN, ^os_pid, _, _, _}, 5000
        end
      end)

    assert native_long == []
  end
end
