defmodule Tether.LifecycleTest do
  use ExUnit.Case, async: true
  import Tether.OsHelpers

  describe "exit reasons are exact" do
    test "exit 0 is :normal, and the pid exits :normal" do
      {:ok, pid, os_pid} = Tether.run("exit 0", [:monitor])
      ref = Process.monitor(pid)
      assert_receive {:DOWN, ^os_pid, :process, ^pid, :normal}, 5000
      assert_receive {:DOWN, ^ref, :process, ^pid, reason} when reason in [:normal, :noproc]
    end

    test "exit codes are decoded, not raw wait statuses" do
      for code <- [1, 3, 255] do
        {:ok, pid, os_pid} = Tether.run("exit #{code}", [:monitor])
        assert_receive {:DOWN, ^os_pid, :process, ^pid, {:exit_status, ^code}}, 5000
      end
    end

    test "a signal death names the signal" do
      {:ok, pid, os_pid} = Tether.run("kill -9 $$", [:monitor])
      assert_receive {:DOWN, ^os_pid, :process, ^pid, {:signal, :sigkill, false}}, 5000
    end

    @tag :tmp_dir
    test "a core dump sets the flag", %{tmp_dir: dir} do
      {:ok, _pid, os_pid} = Tether.run("ulimit -c unlimited; kill -SEGV $$", [:monitor, cd: dir])
      assert_receive {:DOWN, ^os_pid, :process, _, {:signal, :sigsegv, true}}, 5000
    end

    test "the Tether.Process exits with the same reason" do
      {:ok, pid, os_pid} = Tether.run("exit 7", [:monitor])
      ref = Process.monitor(pid)
      assert_receive {:DOWN, ^os_pid, :process, ^pid, {:exit_status, 7}}, 5000
      assert_receive {:DOWN, ^ref, :process, ^pid, reason}, 5000
      assert reason in [{:exit_status, 7}, :noproc]
    end

    test "exactly one :DOWN per process" do
      {:ok, _pid, os_pid} = Tether.run(["true"], [:monitor])
      assert_receive {:DOWN, ^os_pid, :process, _, :normal}, 5000
      refute_receive {:DOWN, ^os_pid, _, _, _}, 200
    end
  end

  describe "exec failures are reported by run/2" do
    test "missing programs" do
      assert Tether.run(["/nonexistent/program"]) == {:error, :enoent}

      assert Tether.run(["no-such-program-on-path-#{System.unique_integer()}"]) ==
               {:error, :enoent}
    end

    @tag :tmp_dir
    test "a file without execute permission", %{tmp_dir: dir} do
      path = Path.join(dir, "not_executable")
      File.write!(path, "#!/bin/sh\n")
      assert Tether.run([path]) == {:error, :eacces}
    end

    test "a missing working directory" do
      assert Tether.run(["true"], cd: "/nonexistent/dir") == {:error, :enoent}
    end
  end

  describe "stop/1" do
    test "SIGTERM first; the DOWN follows" do
      {:ok, pid, os_pid} = Tether.run(["sleep", "100"], [:monitor])
      assert Tether.stop(os_pid) == :ok
      assert_receive {:DOWN, ^os_pid, :process, ^pid, {:signal, :sigterm, false}}, 5000
      assert Tether.stop(os_pid) == {:error, :no_process}
      assert Tether.status(os_pid) == {:error, :no_process}
    end

    test "SIGKILL after kill_timeout when SIGTERM is ignored" do
      {:ok, _pid, os_pid} =
        Tether.run([script("ignore_term.sh")], [:monitor, :stdout, kill_timeout: 1])

      assert first_line(os_pid) == "ready"
      started = System.monotonic_time(:millisecond)
      assert Tether.stop(os_pid) == :ok
      assert Tether.status(os_pid) == {:status, :stopping}
      assert_receive {:DOWN, ^os_pid, :process, _, {:signal, :sigkill, false}}, 5000
      assert System.monotonic_time(:millisecond) - started >= 990
    end

    test "stop and kill accept the Tether pid" do
      {:ok, pid, os_pid} = Tether.run(["sleep", "100"], [:monitor])
      assert Tether.os_pid(pid) == {:ok, os_pid}
      assert Tether.status(pid) == {:status, :running}
      assert Tether.kill(pid, :sigterm) == :ok
      assert_receive {:DOWN, ^os_pid, :process, ^pid, {:signal, :sigterm, false}}, 5000
      assert Tether.stop(pid) == {:error, :no_process}
    end
  end

  describe "kill/2 and status/1" do
    test "names and numbers" do
      {:ok, _, os_pid} = Tether.run(["sleep", "100"], [:monitor])
      assert Tether.kill(os_pid, :sighup) == :ok
      assert_receive {:DOWN, ^os_pid, _, _, {:signal, :sighup, false}}, 5000

      {:ok, _, os_pid} = Tether.run(["sleep", "100"], [:monitor])
      assert Tether.kill(os_pid, 10) == :ok
      assert_receive {:DOWN, ^os_pid, _, _, {:signal, :sigusr1, false}}, 5000
      assert Tether.kill(os_pid, :sigkill) == {:error, :no_process}
    end

    test "job control shows as :stopped" do
      {:ok, _, os_pid} = Tether.run(["sleep", "100"], [:monitor])
      :ok = Tether.kill(os_pid, :sigstop)
      assert wait_until(fn -> Tether.status(os_pid) == {:status, :stopped} end)
      :ok = Tether.kill(os_pid, :sigcont)
      assert wait_until(fn -> Tether.status(os_pid) == {:status, :running} end)
      :ok = Tether.stop(os_pid)
      assert_receive {:DOWN, ^os_pid, _, _, {:signal, :sigterm, false}}, 5000
    end

    test "a stopped process still stops" do
      {:ok, _, os_pid} = Tether.run(["sleep", "100"], [:monitor])
      :ok = Tether.kill(os_pid, :sigstop)
      assert wait_until(fn -> Tether.status(os_pid) == {:status, :stopped} end)
      :ok = Tether.stop(os_pid)
      assert_receive {:DOWN, ^os_pid, _, _, {:signal, :sigterm, false}}, 5000
    end
  end

  describe "registry" do
    test "which_processes, pid and os_pid" do
      {:ok, pid, os_pid} = Tether.run(["sleep", "100"], [:monitor])
      assert os_pid in Tether.which_processes()
      assert Tether.pid(os_pid) == {:ok, pid}
      assert Tether.os_pid(pid) == {:ok, os_pid}
      :ok = Tether.kill(os_pid, :sigkill)
      assert_receive {:DOWN, ^os_pid, _, _, _}, 5000
      refute os_pid in Tether.which_processes()
      assert Tether.pid(os_pid) == {:error, :no_process}
      assert wait_until(fn -> Tether.os_pid(pid) == {:error, :no_process} end)
    end
  end

  describe "right after run returns" do
    # run/2 returns as soon as the OS process exists, possibly before its Tether.Process has
    # recorded it: what it answers must already be true.
    test "os_pid, pid and info answer at once, from any process" do
      for _ <- 1..200 do
        {:ok, pid, os_pid} = Tether.run(["sleep", "100"], [:monitor])
        other = Task.async(fn -> {Tether.os_pid(pid), Tether.info(os_pid)} end)
        assert Tether.os_pid(pid) == {:ok, os_pid}
        assert Tether.pid(os_pid) == {:ok, pid}
        assert %{os_pid: ^os_pid, pid: ^pid, status: :running} = Tether.info(os_pid)
        assert {{:ok, ^os_pid}, %{pid: ^pid}} = Task.await(other)
        :ok = Tether.kill(os_pid, :sigkill)
        assert_receive {:DOWN, ^os_pid, _, _, {:signal, :sigkill, false}}, 5000
      end
    end

    test "info/1 knows a process that exited before its Tether.Process ever ran" do
      # A busy scheduler, made certain: the Tether.Process does not run until after the exit.
      {pid, os_pid} = run_suspended(["true"])
      assert_receive {:DOWN, ^os_pid, :process, ^pid, :normal}, 5000
      info = Task.async(fn -> Tether.info(os_pid) end)
      # Resume only once info/1 has found the start record and waits for the process to end.
      wait_until(fn -> info.pid in elem(Process.info(pid, :monitored_by), 1) end)
      :erlang.resume_process(pid)
      assert %{pid: ^pid, status: {:exited, :normal}, command: ["true"]} = Task.await(info)
    end

    test "a process that only looks like one is not mistaken for a Tether.Process" do
      impostor = spawn(fn -> receive do: (_ -> :ok) end)
      assert Tether.os_pid(impostor) == {:error, :no_process}
      assert Tether.info(impostor) == {:error, :no_process}
      send(impostor, :done)
    end
  end

  describe "environment and directory" do
    test "env changes apply in order; cd applies" do
      env = [{"TETHER_A", "1"}, {"HOME", false}, {"TETHER_B", "x y"}]

      {:ok, _, os_pid} =
        Tether.run(~S(pwd; echo "$TETHER_A|${HOME-unset}|$TETHER_B"), [
          :stdout,
          :monitor,
          env: env,
          cd: "/tmp"
        ])

      assert {"/tmp\n1|unset|x y\n", "", :normal} = collect(os_pid)
    end

    test ":clear empties the environment" do
      {:ok, _, os_pid} =
        Tether.run(["/usr/bin/env"], [:stdout, :monitor, env: [:clear, {"ONLY", "me"}]])

      assert {"ONLY=me\n", "", :normal} = collect(os_pid)
    end

    test "the child's PATH is used to find the program" do
      {:ok, _, os_pid} =
        Tether.run(["ignore_term.sh"], [
          :stdout,
          env: [{"PATH", Path.dirname(script("ignore_term.sh"))}]
        ])

      assert first_line(os_pid) == "ready"
      Tether.kill(os_pid, :sigkill)
    end

    test "executable runs a program under another argv[0]" do
      {:ok, _, os_pid} =
        Tether.run(["my-name", "-c", "echo $0"], [:stdout, :monitor, executable: "/bin/sh"])

      assert {"my-name\n", "", :normal} = collect(os_pid)
    end
  end

  # Runs `argv` and suspends its Tether.Process; when `true` was so quick that the process had
  # already ended by then, that run cannot show the case: run again.
  defp run_suspended(argv, tries \\ 20) do
    {:ok, pid, os_pid} = Tether.run(argv, [:monitor])

    try do
      :erlang.suspend_process(pid)
      {pid, os_pid}
    rescue
      error in ArgumentError ->
        if tries == 1, do: reraise(error, __STACKTRACE__)
        assert_receive {:DOWN, ^os_pid, :process, ^pid, _}, 5000
        run_suspended(argv, tries - 1)
    end
  end
end
