defmodule Tether.ControlTest do
  use ExUnit.Case, async: true
  import Tether.OsHelpers
  import ExUnit.CaptureLog
  import Bitwise

  describe "stdin" do
    test "1 GiB through cat arrives intact and in order; send never blocks" do
      {:ok, _, os_pid} = Tether.run(["cat"], [:stdin, :stdout, :monitor])
      chunk = :binary.copy(<<0, 1, 2, 3, 4, 5, 6, 7>>, 1_048_576 |> div(8))
      # With cat stopped, nothing drains the pipe: a send that waited for it would never return.
      :ok = Tether.kill(os_pid, :sigstop)

      # 1,024 chunks of 1 MiB, numbered so that order is checked on the way back.
      for i <- 0..1023 do
        :ok = Tether.send(os_pid, [<<i::32>>, binary_part(chunk, 4, byte_size(chunk) - 4)])
      end

      :ok = Tether.send(os_pid, :eof)
      :ok = Tether.kill(os_pid, :sigcont)
      assert receive_numbered(os_pid, 0, <<>>) == 1024
    end

    test "small writes (straight to the pipe) and big ones (queued) keep their order" do
      {:ok, _, os_pid} = Tether.run(["cat"], [:stdin, :stdout, :monitor])
      # Sizes on both sides of the direct-write limit (64 KiB) and of the pipe's capacity, so
      # that small writes arrive while big ones still wait in the queue.
      sizes = Stream.cycle([1, 100, 70_000, 7, 2_000_000, 65_536, 3]) |> Enum.take(200)

      chunks =
        sizes
        |> Enum.with_index()
        |> Enum.map(fn {size, i} -> :binary.copy(<<rem(i, 251)>>, size) end)

      for chunk <- chunks, do: :ok = Tether.send(os_pid, chunk)
      :ok = Tether.send(os_pid, :eof)
      expected = IO.iodata_to_binary(chunks)
      assert {^expected, "", :normal} = collect(os_pid)
      assert Tether.info(os_pid).stdin_bytes == byte_size(expected)
    end

    test "flush_stdin waits until the queue is in the pipe; errors when it never will be" do
      {:ok, _, os_pid} = Tether.run(["cat"], [:stdin, :stdout, :monitor, active: :once])
      # cat cannot write (no credit), so it stops reading: 8 MB stay queued.
      :ok = Tether.send(os_pid, :binary.copy("x", 8_000_000))
      assert Tether.flush_stdin(os_pid, 200) == {:error, :timeout}
      # Let the output flow: cat reads again, and the queue drains.
      :ok = Tether.activate(os_pid, true)
      assert Tether.flush_stdin(os_pid, 10_000) == :ok
      :ok = Tether.send(os_pid, :eof)
      # Closed, or already gone: cat may have read the EOF and exited by now.
      assert Tether.flush_stdin(os_pid) in [{:error, :closed}, {:error, :no_process}]
      assert_receive {:DOWN, ^os_pid, _, _, :normal}, 10_000

      # A process that exits without reading what was queued.
      {:ok, _, os_pid} = Tether.run(["sleep", "0.3"], [:stdin, :monitor])
      :ok = Tether.send(os_pid, :binary.copy("x", 8_000_000))
      assert Tether.flush_stdin(os_pid) == {:error, :closed}
      assert_receive {:DOWN, ^os_pid, _, _, :normal}, 5000
      assert Tether.flush_stdin(os_pid) == {:error, :no_process}
      assert_raise ArgumentError, fn -> Tether.flush_stdin(os_pid, :soon) end
    end

    test "{:stdin, path} and {:stdin, :close}" do
      path = Path.join(System.tmp_dir!(), "tether-stdin-#{System.unique_integer([:positive])}")
      File.write!(path, "from a file\n")
      {:ok, _, os_pid} = Tether.run(["cat"], [:stdout, :monitor, stdin: path])
      assert {"from a file\n", "", :normal} = collect(os_pid)
      File.rm!(path)

      {:ok, _, os_pid} =
        Tether.run("cat || echo closed", [:stdout, :stderr, :monitor, stdin: :close])

      assert {"closed\n", _, :normal} = collect(os_pid)
    end

    test "send without :stdin, and after :eof" do
      {:ok, _, os_pid} = Tether.run(["sleep", "10"])
      assert Tether.send(os_pid, "x") == {:error, :closed}
      assert Tether.send(999_999_999, "x") == {:error, :no_process}
      assert_raise ArgumentError, fn -> Tether.send(os_pid, :bad) end
      Tether.kill(os_pid, :sigkill)
    end
  end

  describe "output destinations" do
    test "a fun/3 runs for every chunk, before the :DOWN" do
      parent = self()
      fun = fn stream, os_pid, data -> send(parent, {:fun, stream, os_pid, data}) end

      {:ok, _, os_pid} =
        Tether.run("seq 1 3000; echo err >&2", [:monitor, stdout: fun, stderr: fun])

      expected = Enum.map_join(1..3000, &"#{&1}\n")
      assert receive_fun(os_pid, "") == expected
    end

    @tag :tmp_dir
    test "files: truncate, append with mode", %{tmp_dir: dir} do
      path = Path.join(dir, "out.log")
      File.write!(path, "old\n")
      {:ok, _, os_pid} = Tether.run("echo one", [:monitor, stdout: path])
      assert_receive {:DOWN, ^os_pid, _, _, :normal}, 5000
      assert File.read!(path) == "one\n"

      {:ok, _, os_pid} = Tether.run("echo two", [:monitor, stdout: {path, [:append]}])
      assert_receive {:DOWN, ^os_pid, _, _, :normal}, 5000
      assert File.read!(path) == "one\ntwo\n"

      fresh = Path.join(dir, "fresh.log")

      {:ok, _, os_pid} =
        Tether.run("echo x >&2", [:monitor, stderr: {fresh, [:append, {:mode, 0o600}]}])

      assert_receive {:DOWN, ^os_pid, _, _, :normal}, 5000
      assert File.read!(fresh) == "x\n"
      assert (File.stat!(fresh).mode &&& 0o777) == 0o600
    end

    test "stderr into stdout keeps the interleaving" do
      script = "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done"
      {:ok, _, os_pid} = Tether.run(script, [:stdout, :monitor, stderr: :stdout])
      expected = Enum.map_join(1..5, &"out#{&1}\nerr#{&1}\n")
      assert {^expected, "", :normal} = collect(os_pid)
    end

    test ":print logs each chunk with the os_pid" do
      log =
        capture_log(fn ->
          {:ok, _, os_pid} = Tether.run("echo printed-line", [:monitor, stdout: :print])
          assert_receive {:DOWN, ^os_pid, _, _, :normal}, 5000
          send(self(), {:os_pid, os_pid})
        end)

      assert_received {:os_pid, os_pid}
      assert log =~ "[#{os_pid}:stdout] printed-line"
    end

    test ":close closes the descriptor" do
      {:ok, _, os_pid} =
        Tether.run("echo x || echo stdout-closed >&2", [:stderr, :monitor, stdout: :close])

      assert {"", err, :normal} = collect(os_pid)
      assert err =~ "stdout-closed\n"
    end
  end

  describe "waiting for a result" do
    test ":sync returns the output and the status" do
      assert Tether.run("echo hi", [:sync, :stdout]) == {:ok, [stdout: ["hi\n"]]}

      assert Tether.run("echo oops >&2; exit 2", [:sync, :stdout, :stderr]) ==
               {:error, [exit_status: 2, stdout: [], stderr: ["oops\n"]]}

      assert Tether.run("kill -9 $$", [:sync]) == {:error, [exit_signal: :sigkill]}
    end

    test ":sync with a timeout stops the process" do
      started = System.monotonic_time(:millisecond)
      assert Tether.run(["sleep", "10"], [:sync, timeout: 200]) == {:error, :timeout}
      assert System.monotonic_time(:millisecond) - started < 2000
      refute_receive {:DOWN, _, _, _, _}, 100
    end

    test "cmd/3 is a drop-in for System.cmd/3" do
      for {command, args, options} <- [
            {"echo", ["a", "b"], []},
            {"sh", ["-c", "echo out; echo err >&2; exit 4"], [stderr_to_stdout: true]},
            {"pwd", [], [cd: "/tmp"]},
            {"sh", ["-c", "echo $TETHER_X"], [env: [{"TETHER_X", "y"}]]},
            {"sh", ["-c", "echo $0"], [arg0: "renamed"]},
            {"seq", ["1", "5"], [into: []]}
          ] do
        {tether_out, tether_status} = Tether.cmd(command, args, options)
        {system_out, system_status} = System.cmd(command, args, options)
        assert IO.iodata_to_binary(tether_out) == IO.iodata_to_binary(system_out)
        assert tether_status == system_status
      end

      assert_raise ErlangError, fn -> Tether.cmd("no-such-program-anywhere", []) end
    end

    test "cmd/3 takes :input as iodata or an Enumerable, and a :timeout" do
      assert Tether.cmd("cat", [], input: "abc") == {"abc", 0}

      assert Tether.cmd("wc", ["-l"], input: Stream.map(1..10, &"#{&1}\n"))
             |> elem(0)
             |> String.trim() == "10"

      assert {"", :timeout} = Tether.cmd("sleep", ["10"], timeout: 100)
      assert Tether.cmd("sh", ["-c", "kill -TERM $$"]) == {"", 143}
    end
  end

  describe "process control" do
    test "run_link: a non-zero exit reaches the caller as an exit signal" do
      Process.flag(:trap_exit, true)
      {:ok, pid, _} = Tether.run_link("exit 3")
      assert_receive {:EXIT, ^pid, {:exit_status, 3}}, 5000
      {:ok, pid, _} = Tether.run_link(["true"])
      assert_receive {:EXIT, ^pid, :normal}, 5000
    end

    test ":success_exit_code makes that code :normal" do
      {:ok, _, os_pid} = Tether.run("exit 7", [:monitor, success_exit_code: 7])
      assert_receive {:DOWN, ^os_pid, _, _, :normal}, 5000
    end

    test ":kill runs a custom stop command with CHILD_PID" do
      {:ok, _, os_pid} =
        Tether.run("echo ready; exec sleep 100", [
          :monitor,
          :stdout,
          kill: "kill -USR2 $CHILD_PID",
          kill_group: false
        ])

      assert first_line(os_pid) == "ready"
      :ok = Tether.stop(os_pid)
      assert_receive {:DOWN, ^os_pid, _, _, {:signal, :sigusr2, false}}, 5000
    end

    test ":kill_sequence escalates as data" do
      script =
        "trap 'echo int' INT; trap 'echo term' TERM; echo ready; while :; do sleep 0.05; done"

      {:ok, _, os_pid} =
        Tether.run(script, [:monitor, :stdout, kill_sequence: [sigint: 300, sigterm: 300]])

      assert first_line(os_pid) == "ready"
      started = System.monotonic_time(:millisecond)
      :ok = Tether.stop(os_pid)
      {out, _, reason} = collect(os_pid)
      assert out =~ "int" and out =~ "term"
      assert reason == {:signal, :sigkill, false}
      assert System.monotonic_time(:millisecond) - started >= 590
    end

    test "{:group, pgid} joins a group; kill addresses it" do
      {:ok, _, leader} = Tether.run(["sleep", "100"], [:monitor])
      {:ok, _, member} = Tether.run(["sleep", "100"], [:monitor, group: leader])
      assert group_members(leader) |> Enum.sort() == Enum.sort([leader, member])
      :ok = Tether.kill(member, :sigkill)
      assert_receive {:DOWN, ^member, _, _, {:signal, :sigkill, false}}, 5000
      assert_receive {:DOWN, ^leader, _, _, {:signal, :sigkill, false}}, 5000
    end

    test ":nice and :rlimit apply" do
      {:ok, [stdout: out]} =
        Tether.run("nice; ulimit -n; ulimit -c", [
          :sync,
          :stdout,
          nice: 5,
          rlimit: [nofile: 99, core: 0]
        ])

      assert IO.iodata_to_binary(out) == "5\n99\n0\n"
    end

    test ":user switches uid, gid and groups as root; refuses otherwise" do
      root? = File.read!("/proc/self/status") =~ ~r/^Uid:\s+0\s/m

      if root? do
        {:ok, [stdout: out]} = Tether.run("id -u; id -g", [:sync, :stdout, user: "nobody"])
        {uid, 0} = System.cmd("id", ["-u", "nobody"])
        {gid, 0} = System.cmd("id", ["-g", "nobody"])
        assert IO.iodata_to_binary(out) == uid <> gid
      else
        assert Tether.run(["true"], user: "nobody") == {:error, :eperm}
      end

      assert Tether.run(["true"], user: "no-such-user-here") == {:error, :unknown_user}
    end

    test ":idle_timeout stops a silent process; :max_output a chatty one" do
      {:ok, _, os_pid} = Tether.run("echo hi; sleep 100", [:monitor, :stdout, idle_timeout: 200])
      assert {"hi\n", "", {:signal, :sigterm, false}} = collect(os_pid)

      {:ok, _, os_pid} = Tether.run(["yes"], [:monitor, :stdout, max_output: 100_000])
      assert {out, "", {:signal, :sigterm, false}} = collect(os_pid)
      assert byte_size(out) == 100_000
    end

    test "manage/2 adopts a process started elsewhere" do
      port = Port.open({:spawn_executable, System.find_executable("sleep")}, args: ["100"])
      {:os_pid, os_pid} = Port.info(port, :os_pid)
      # Until the port's child has exec'd, it may still ignore SIGTERM (erl_child_setup's state).
      assert wait_until(fn -> File.read("/proc/#{os_pid}/comm") == {:ok, "sleep\n"} end)
      {:ok, pid, ^os_pid} = Tether.manage(os_pid, [:monitor])
      assert Tether.status(os_pid) == {:status, :running}
      assert Tether.pid(os_pid) == {:ok, pid}
      :ok = Tether.stop(os_pid)
      assert_receive {:DOWN, ^os_pid, :process, ^pid, :unknown}, 5000
      assert Tether.manage(999_999_999) == {:error, :no_process}
      assert_raise ArgumentError, fn -> Tether.manage(os_pid, [:stdout]) end
    end
  end

  describe "pty" do
    test "an interactive shell works through a pty" do
      {:ok, _, os_pid} = Tether.run(["sh", "-i"], [:pty, :stdout, :monitor, env: [{"PS1", "$ "}]])
      :ok = Tether.send(os_pid, "tty; echo $((6 * 7))\n")
      assert wait_for_output(os_pid, "42", "") =~ "/dev/pts/"
      # A size change is in effect for whatever is sent after it.
      for {rows, cols} <- [{40, 120}, {50, 100}, {30, 90}, {41, 121}] do
        :ok = Tether.winsz(os_pid, rows, cols)
        :ok = Tether.send(os_pid, "stty size\n")
        assert wait_for_output(os_pid, "#{rows} #{cols}", "") =~ "#{rows} #{cols}"
      end

      :ok = Tether.send(os_pid, "exit 0\n")
      assert_receive {:DOWN, ^os_pid, _, _, :normal}, 5000
    end

    test "a pty nobody reads blocks neither the caller nor the event loop" do
      # Only stdin is ours: the pty's output goes nowhere, and sleep never reads its input, so
      # the terminal's small input buffer fills at once.
      {:ok, _, os_pid} = Tether.run(["sleep", "30"], [:pty, :stdin, :monitor, stdout: :null])
      for _ <- 1..64, do: :ok = Tether.send(os_pid, :binary.copy("x\n", 8192))
      assert Tether.winsz(os_pid, 10, 10) == :ok
      assert Tether.flush_stdin(os_pid, 100) == {:error, :timeout}
      # The loop still serves everyone else.
      {:ok, _, other} = Tether.run(["true"], [:monitor])
      assert_receive {:DOWN, ^other, :process, _, :normal}, 5000
      :ok = Tether.kill(os_pid, :sigkill)
      assert_receive {:DOWN, ^os_pid, :process, _, {:signal, :sigkill, false}}, 5000
    end

    test "echo is off unless :pty_echo" do
      {:ok, _, os_pid} = Tether.run(["cat"], [:pty, :stdout, :monitor])
      :ok = Tether.send(os_pid, "once\n")
      assert wait_for_output(os_pid, "once", "") == "once\r\n"
      Tether.kill(os_pid, :sigkill)

      {:ok, _, os_pid} =
        Tether.run(["cat"], [:pty, :pty_echo, :stdout, :monitor, winsz: {30, 90}])

      :ok = Tether.send(os_pid, "twice\n")
      assert wait_for_output(os_pid, "twice\r\ntwice", "") =~ "twice\r\ntwice"
      Tether.kill(os_pid, :sigkill)
    end
  end

  describe "Tether.Daemon" do
    test "runs under a supervisor, logs output, restarts after a failure, stops gracefully" do
      path = Path.join(System.tmp_dir!(), "tether-daemon-#{System.unique_integer([:positive])}")
      script = "echo started >> #{path}; echo daemon-up; sleep 100"
      name = :"daemon_#{System.unique_integer([:positive])}"

      log =
        capture_log(fn ->
          {:ok, sup} =
            Supervisor.start_link([{Tether.Daemon, cmd: script, name: name}],
              strategy: :one_for_one
            )

          assert wait_until(fn -> File.exists?(path) end)
          first = Tether.Daemon.os_pid(name)
          :ok = Tether.kill(first, :sigkill)

          # Between the crash and the restart the name is briefly gone or dying.
          current = fn ->
            try do
              Tether.Daemon.os_pid(name)
            catch
              :exit, _ -> nil
            end
          end

          assert wait_until(fn -> current.() not in [nil, first] end)
          second = current.()
          assert wait_until(fn -> File.read!(path) == "started\nstarted\n" end)
          :ok = Supervisor.stop(sup)
          assert wait_gone([first, second]) == []
        end)

      assert log =~ "[#{inspect(name)}] daemon-up"
      File.rm(path)
    end

    test "a daemon whose command exits 0 stops :normal (transient: no restart)" do
      Process.flag(:trap_exit, true)
      {:ok, daemon} = Tether.Daemon.start_link(cmd: ["true"])
      assert_receive {:EXIT, ^daemon, :normal}, 5000
    end
  end

  defp receive_numbered(os_pid, expected, buffer) do
    receive do
      {:stdout, ^os_pid, data} -> check_chunks(os_pid, expected, buffer <> data)
      {:DOWN, ^os_pid, :process, _, :normal} -> assert(buffer == <<>>) && expected
    after
      30_000 -> flunk("stalled at chunk #{expected}")
    end
  end

  defp check_chunks(os_pid, expected, <<n::32, _::binary-size(1_048_572), rest::binary>>) do
    assert n == expected, "chunk #{n} arrived where #{expected} was expected"
    check_chunks(os_pid, expected + 1, rest)
  end

  defp check_chunks(os_pid, expected, partial), do: receive_numbered(os_pid, expected, partial)

  defp receive_fun(os_pid, acc) do
    receive do
      {:fun, :stdout, ^os_pid, data} -> receive_fun(os_pid, acc <> data)
      {:fun, :stderr, ^os_pid, "err\n"} -> receive_fun(os_pid, acc)
      {:DOWN, ^os_pid, :process, _, :normal} -> acc
    after
      10_000 -> flunk("no DOWN")
    end
  end

  defp wait_for_output(os_pid, wanted, acc) do
    if String.contains?(acc, wanted) do
      acc
    else
      receive do
        {:stdout, ^os_pid, data} -> wait_for_output(os_pid, wanted, acc <> data)
      after
        5000 -> flunk("never saw #{inspect(wanted)} in #{inspect(acc)}")
      end
    end
  end
end
