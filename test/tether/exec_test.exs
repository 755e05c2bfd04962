defmodule Tether.ExecTest do
  # erlexec's behaviour of each call, with real processes. The `exec` server's own life (start,
  # stop, kill, the :erlexec application, start options) is in exec_server_test.exs.
  use ExUnit.Case, async: true
  import Bitwise
  import Tether.OsHelpers

  doctest :exec
  doctest Tether.Exec.Options

  test "Erlang code using exec:run/2 works unchanged (EUnit module)" do
    assert :eunit.test(:exec_usage_tests, [:no_tty]) == :ok
  end

  # The calls of our users' TestCluster.Manager design (the design document they wrote), as written there.
  test "the seed's run options, output handler messages and stop/kill calls" do
    env = [{"PHX_PORT", "4000"}, {"MIX_ENV", "dev"}]

    {:ok, pid, os_pid} =
      :exec.run(["sh", "-c", "echo out-$PHX_PORT; echo err >&2; sleep 100"], [
        {:env, env},
        {:cd, File.cwd!()},
        :monitor,
        :stdout,
        :stderr,
        {:stdout, {:send, self()}},
        {:stderr, {:send, self()}},
        {:kill_timeout, 5}
      ])

    assert_receive {:stdout, ^os_pid, "out-4000\n"}, 5000
    assert_receive {:stderr, ^os_pid, "err\n"}, 5000
    assert :exec.stop(os_pid) == :ok
    assert_receive {:DOWN, ^os_pid, :process, ^pid, :normal}, 5000
    assert wait_gone([os_pid]) == []
  end

  describe "string commands" do
    test "run under $SHELL -c" do
      shell = System.get_env("SHELL", "") |> then(&if(&1 == "", do: "/bin/sh", else: &1))
      assert :exec.run(~c"echo $0", [:sync, :stdout]) == {:ok, [stdout: ["#{shell}\n"]]}
    end
  end

  describe "a program that cannot be executed" do
    test "is a process that says so on stderr and exits with status 1" do
      {:ok, pid, os_pid} = :exec.run(["/nonexistent/prog"], [:stderr, :monitor])
      assert_receive {:stderr, ^os_pid, message}, 5000

      assert message ==
               "Pid #{os_pid}: cannot execute '/nonexistent/prog': No such file or directory\n"

      assert_receive {:DOWN, ^os_pid, :process, ^pid, {:exit_status, 256}}, 5000
    end

    test "in sync mode: {error, [{exit_status, 256}, {stderr, [...]}]}" do
      assert {:error, [{:exit_status, 256}, {:stderr, [message]}]} =
               :exec.run(~c"ls", [:sync, {:executable, ~c"00kuku00"}, :stdout, :stderr])

      assert [_pid, " cannot execute '00kuku00'", " No such file or directory\n"] =
               String.split(message, ":")
    end

    test "a missing cd is erlexec's chdir error" do
      assert {:error, [{:exit_status, 256}, {:stderr, [message]}]} =
               :exec.run(["/bin/true"], [:sync, :stderr, {:cd, "/nonexistent/dir"}])

      assert message == "Cannot chdir to '/nonexistent/dir': No such file or directory\n"
    end

    # Found by the fuzzer: bare-atom options crashed the proxy, and the caller waited 30 s.
    test "with stdin and pty_echo among its options" do
      {:ok, pid, os_pid} =
        :exec.run(~c"true", [{:cd, "/nonexistent"}, :stdin, :pty_echo, :stderr, :monitor])

      assert_receive {:stderr, ^os_pid,
                      "Cannot chdir to '/nonexistent': No such file or directory\n"},
                     5000

      assert_receive {:DOWN, ^os_pid, :process, ^pid, {:exit_status, 256}}, 5000
    end
  end

  describe "sync" do
    test "leaves out streams that produced nothing" do
      assert :exec.run(~c"true", [:sync, :stdout, :stderr]) == {:ok, []}
      assert :exec.run(~c"echo e >&2", [:sync, :stdout, :stderr]) == {:ok, [stderr: ["e\n"]]}

      assert :exec.run(~c"echo o; exit 2", [:sync, :stdout, :stderr]) ==
               {:error, [exit_status: 512, stdout: ["o\n"]]}
    end

    test "the {stdout, File, Opts} and {stdout, stderr} forms" do
      path = Path.join(System.tmp_dir!(), "tether-exec-#{System.unique_integer([:positive])}")
      file = String.to_charlist(path)

      assert {:ok, []} =
               :exec.run(~c"echo one", [:sync, {:stdout, file, [:append, {:mode, 0o600}]}])

      assert {:ok, []} = :exec.run(~c"echo two", [:sync, {:stdout, file, [:append]}])
      assert File.read!(path) == "one\ntwo\n"
      File.rm!(path)

      assert {:ok, [stderr: ["x\n"]]} =
               :exec.run(~c"echo x", [:sync, :stderr, {:stdout, :stderr}])
    end
  end

  describe "signals and groups" do
    test "stop/1 and kill/2 signal only the process unless kill_group was given" do
      {:ok, pid, os_pid} = :exec.run([script("grandchild.sh")], [:stdout, :monitor])
      grandchild = os_pid |> first_line() |> String.to_integer()
      assert :exec.kill(os_pid, :sigterm) == :ok
      assert_receive {:DOWN, ^os_pid, :process, ^pid, {:exit_status, 15}}, 5000
      # The kill reached the child alone (its exit status is the shell's, not a signal death);
      # as in erlexec, what it left behind runs on (while the server does: MIGRATING.md), and
      # Tether.stop/1 of the child's os_pid stops it.
      assert alive?(grandchild)
      assert Tether.stop(os_pid) == :ok
      assert wait_gone([grandchild]) == []

      {:ok, pid, os_pid} = :exec.run([script("grandchild.sh")], [:stdout, :monitor, :kill_group])
      grandchild = os_pid |> first_line() |> String.to_integer()
      assert :exec.stop(os_pid) == :ok
      assert_receive {:DOWN, ^os_pid, :process, ^pid, :normal}, 5000
      assert wait_gone([grandchild]) == []
    end

    test "a {group, GID} member's stop leaves the leader and its siblings alone" do
      {:ok, leader_pid, leader} = :exec.run(~c"sleep 100", [{:group, 0}, :monitor])
      {:ok, p1, i1} = :exec.run(~c"sleep 100", [{:group, leader}, :monitor])
      # `; true` makes every shell fork its sleep: what a member started is the member's too.
      {:ok, _p2, i2} = :exec.run(~c"sleep 100; true", [{:group, leader}, :monitor])
      assert :exec.stop(i1) == :ok
      assert_receive {:DOWN, ^i1, :process, ^p1, :normal}, 5000
      assert alive?(leader) and alive?(i2)
      :ok = :exec.kill(leader, 9)
      assert_receive {:DOWN, ^leader, :process, ^leader_pid, {:exit_status, 9}}, 5000
      # Without kill_group the leader's exit leaves the group alone, too: a sibling that joined
      # it is a child of its own, not the leader's leftover.
      assert alive?(i2)
      :ok = :exec.kill(i2, 9)
      assert_receive {:DOWN, ^i2, :process, _, {:exit_status, 9}}, 5000
    end

    test "with kill_group, the group gets SIGTERM when its leader exits (erlexec's test_setpgid)" do
      {:ok, p0, leader} = :exec.run(~c"sleep 0.3", [{:group, 0}, :kill_group, :monitor])
      {:ok, p1, _} = :exec.run(~c"sleep 15; true", [{:group, leader}, :monitor])
      {:ok, p2, _} = :exec.run(~c"sleep 15", [{:group, leader}, :monitor])
      assert_receive {:DOWN, _, :process, ^p0, :normal}, 5000
      assert_receive {:DOWN, _, :process, ^p1, {:exit_status, 15}}, 5000
      assert_receive {:DOWN, _, :process, ^p2, {:exit_status, 15}}, 5000
    end

    test "with kill_group, kill/2 reaches the group as stop/1 does (MIGRATING.md)" do
      {:ok, pid, os_pid} = :exec.run([script("grandchild.sh")], [:stdout, :monitor, :kill_group])
      grandchild = os_pid |> first_line() |> String.to_integer()
      assert :exec.kill(os_pid, :sigstop) == :ok
      assert wait_until(fn -> run_state(grandchild) == "T" and run_state(os_pid) == "T" end)
      assert :exec.kill(os_pid, :sigcont) == :ok
      assert wait_until(fn -> run_state(grandchild) == "S" end)
      assert :exec.stop(os_pid) == :ok
      assert_receive {:DOWN, ^os_pid, :process, ^pid, :normal}, 5000
      assert wait_gone([grandchild]) == []
    end

    test "with kill_group, a {group, GID} member's exit takes its leader's group down" do
      {:ok, leader_pid, leader} = :exec.run(~c"sleep 100", [{:group, 0}, :monitor])
      {:ok, p1, i1} = :exec.run(~c"cat", [:stdin, {:group, leader}, :kill_group, :monitor])
      {:ok, p2, i2} = :exec.run(~c"sleep 100", [{:group, leader}, :monitor])
      :ok = :exec.send(i1, :eof)
      assert_receive {:DOWN, ^i1, :process, ^p1, :normal}, 5000
      assert_receive {:DOWN, ^leader, :process, ^leader_pid, {:exit_status, 15}}, 5000
      assert_receive {:DOWN, ^i2, :process, ^p2, {:exit_status, 15}}, 5000
    end

    test "kill/2 takes erlexec's names of the real-time signals (signal_to_int/1's table)" do
      for {name, number} <- [sigrtmin: 34, sigrtmax: 64] do
        {:ok, pid, os_pid} = :exec.run(~c"exec sleep 100", [:monitor])
        assert :exec.kill(os_pid, name) == :ok
        assert_receive {:DOWN, ^os_pid, :process, ^pid, {:exit_status, ^number}}, 5000
        assert :exec.signal_to_int(name) == number
      end
    end

    test "setpgid/2 exists and answers as the kernel does for a running child" do
      {:ok, _pid, os_pid} = :exec.run(~c"sleep 100", [])
      assert :exec.setpgid(os_pid, os_pid) == {:error, :eacces}
      assert :exec.setpgid(-5, 1) == {:error, ~c"pid -5 doesn't exist"}
      :exec.kill(os_pid, 9)
    end
  end

  describe "stop_and_wait/2" do
    test "takes the DOWN of a monitored process from the mailbox and returns its reason" do
      {:ok, pid, os_pid} = :exec.run(~c"sleep 100", [:monitor])
      assert :exec.stop_and_wait(os_pid, 5000) == :normal
      refute_received {:DOWN, ^os_pid, :process, ^pid, _}
    end

    test "without a monitor there is no DOWN to wait for: {error, timeout}" do
      {:ok, _pid, os_pid} = :exec.run(~c"sleep 100", [])
      assert :exec.stop_and_wait(os_pid, 200) == {:error, :timeout}
      # It was stopped all the same.
      assert wait_gone([os_pid]) == []
    end

    test "an os_pid that is not a child: {error, not_found}" do
      assert :exec.stop_and_wait(-7, 100) == {:error, :not_found}
    end
  end

  describe "erlexec 2.x's error terms" do
    test "for os_pids and pids that are not children" do
      {:ok, pid, os_pid} = :exec.run(~c"exit 0", [:monitor])
      assert_receive {:DOWN, ^os_pid, :process, ^pid, :normal}, 5000
      assert :exec.stop(os_pid) == {:error, ~c"pid not alive"}

      assert :exec.kill(os_pid, 9) ==
               {:error, ~c"Cannot kill a pid not managed by this application"}

      assert :exec.stop(pid) == {:error, :no_process}
      assert :exec.kill(pid, 9) == {:error, :no_process}
      assert :exec.kill(-3, 9) == {:error, ~c"Not allowed to send signal to all processes"}
      assert :exec.pid(os_pid) == :undefined
      assert :exec.winsz(os_pid, 10, 10) == {:error, ~c"pid #{os_pid} doesn't exist"}
      # erlexec drops data for a process that is gone.
      assert :exec.send(os_pid, "late") == :ok
      assert :exec.send(pid, "late") == {:error, :no_process}
    end

    test "for bad options" do
      assert :exec.run(~c"true", [:bogus]) == {:error, {:invalid_option, :bogus}}

      assert :exec.run(~c"true", [{:kill_timeout, -1}]) ==
               {:error, {:invalid_option, {:kill_timeout, -1}}}

      assert :exec.run(~c"true", [{:env, [~c"A=1", 5]}]) == {:error, {:invalid_env_value, [5]}}
      assert {:error, "Invalid stdout option " <> _} = :exec.run(~c"true", [{:stdout, {:x}}])

      # An improper list of file options is an error, not a crash of the caller.
      assert {:error, "Invalid stdout option: " <> _} =
               :exec.run(~c"true", [{:stdout, "/dev/null", [:append | :x]}])

      assert :exec.run(~c"true", [{:user, ~c"nobody"}]) ==
               {:error, ~c"User nobody is not allowed to run commands!"}
    end

    test "for bad input to debug/1 and pty_opts/2" do
      assert :exec.debug(-1) == {:error, :badarg}
      assert :exec.debug(:x) == {:error, :badarg}
      assert {:ok, _} = :exec.debug(0)
      assert :exec.pty_opts(1, :x) == {:error, {:invalid_pty_value, :x}}

      assert :exec.pty_opts(1, [{:echo, :maybe}]) ==
               {:error, {:invalid_pty_value, [echo: :maybe]}}
    end
  end

  describe "terminals" do
    test "{pty, Opts} applies termios options: echo on, and ^B as the interrupt character" do
      {:ok, pid, os_pid} =
        :exec.run(~c"echo started && cat", [
          :stdin,
          :stdout,
          {:stderr, :stdout},
          {:pty, [{:echo, true}, {:vintr, 2}]},
          :monitor
        ])

      assert receive_bytes(os_pid, "started\r\n")
      :ok = :exec.send(os_pid, "test")
      assert receive_bytes(os_pid, "test")
      # ^C is no longer the interrupt: echoed, nothing else.
      :ok = :exec.send(os_pid, <<3>>)
      assert receive_bytes(os_pid, "^C")
      :ok = :exec.send(os_pid, <<2>>)
      assert receive_bytes(os_pid, "^B")
      assert_receive {:DOWN, ^os_pid, :process, ^pid, {:exit_status, 2}}, 5000
    end

    test "pty_opts/2 sets them on a running process" do
      {:ok, pid, os_pid} =
        :exec.run(~c"echo started && cat", [:stdin, :stdout, {:stderr, :stdout}, :pty, :monitor])

      assert receive_bytes(os_pid, "started\r\n")
      # Echo is off: cat's copy only.
      :ok = :exec.send(os_pid, "a\n")
      assert receive_bytes(os_pid, "a\r\n")
      assert :exec.pty_opts(os_pid, [{:echo, 1}, {:vintr, 2}]) == :ok
      :ok = :exec.send(os_pid, "b\n")
      assert receive_bytes(os_pid, "b\r\nb\r\n")
      :ok = :exec.send(os_pid, <<2>>)
      assert receive_bytes(os_pid, "^B")
      assert_receive {:DOWN, ^os_pid, :process, ^pid, {:exit_status, 2}}, 5000
    end

    test "bad values: {error, {invalid_pty_value, Bad}} with the bad entries" do
      assert :exec.run(~c"true", [
               :sync,
               {:pty, [echo: true, vintr: false, tty_op_ispeed: -1, invalid: 1]}
             ]) ==
               {:error, {:invalid_pty_value, [vintr: false, tty_op_ispeed: -1, invalid: 1]}}
    end

    test "{winsz, {0, N}} is taken, as erlexec takes it: the terminal keeps its size" do
      assert {:ok, [stdout: [size]]} =
               :exec.run(~c"stty size", [:pty, {:winsz, {0, 0}}, :stdout, :sync])

      assert size =~ ~r/^\d+ \d+\r?\n$/
      assert {:ok, _} = :exec.run(~c"true", [:pty, {:winsz, {0, 40}}, :sync])
    end

    test "winsz/3 on a pty process" do
      {:ok, _pid, os_pid} =
        :exec.run(~c"read x; stty size", [:pty, :stdin, :stdout, :monitor, {:winsz, {20, 70}}])

      assert :exec.winsz(os_pid, 30, 100) == :ok
      :ok = :exec.send(os_pid, "\n")
      assert receive_bytes(os_pid, "30 100\r\n")
    end
  end

  describe "{capabilities, Caps} of a run (the exec server started without it)" do
    @describetag skip: not (File.read!("/proc/self/status") =~ ~r/^Uid:\s+0\s/m) && "needs root"

    # A root child: it holds only those, its bounding set included (erlexec's run option adds
    # to its port's; here the VM stands in for the port, and root would otherwise hold all).
    test "a root child holds exactly those, ambient, within its bounding set" do
      {:ok, _pid, os_pid} =
        :exec.run([~c"sleep", ~c"30"], [{:capabilities, [:kill, :cap_net_bind_service]}])

      on_exit(fn -> :exec.stop(os_pid) end)
      wanted = 0x420

      assert capabilities(os_pid) == every_set(wanted)
    end

    test "all is every capability the VM holds; [] is no option (erlexec's port program's)" do
      held = held_capabilities()
      {:ok, _pid, all} = :exec.run([~c"sleep", ~c"30"], [{:capabilities, :all}])
      {:ok, _pid, none} = :exec.run([~c"sleep", ~c"30"], [{:capabilities, []}])
      on_exit(fn -> Enum.each([all, none], &:exec.stop/1) end)
      assert %{effective: ^held, permitted: ^held, ambient: ^held} = capabilities(all)
      assert %{effective: ^held, permitted: ^held, ambient: 0} = capabilities(none)
    end

    test "what the VM does not hold is left out, as erlexec's port program leaves it out" do
      held = held_capabilities()
      # The first this VM lacks, if any (a container's root lacks some: sys_resource, …).
      unheld = Tether.Options.capability_names(bnot(held) &&& (1 <<< 41) - 1) |> Enum.take(1)
      {:ok, _pid, os_pid} = :exec.run([~c"sleep", ~c"30"], [{:capabilities, [:kill | unheld]}])
      on_exit(fn -> :exec.stop(os_pid) end)
      assert %{effective: 0x20, permitted: 0x20, ambient: 0x20} = capabilities(os_pid)
    end
  end

  test "bad capabilities are an invalid_option" do
    for bad <- [[:no_such_cap], :kill, [:kill | :x], [~c"kill"]] do
      assert :exec.run(~c"true", [{:capabilities, bad}]) ==
               {:error, {:invalid_option, {:capabilities, bad}}}
    end
  end

  describe "success_exit_code" do
    test "a 0 exit is reported as the raw status N, as erlexec does" do
      assert :exec.run(~c"sleep 0.01", [{:success_exit_code, 0}, :sync]) == {:ok, []}

      assert :exec.run(~c"sleep 0.01", [{:success_exit_code, 1}, :sync]) ==
               {:error, [exit_status: 1]}

      assert :exec.run(~c"exit 3", [{:success_exit_code, 1}, :sync]) ==
               {:error, [exit_status: 768]}
    end
  end

  describe "manage/2" do
    test "an external process's DOWN reason is {exit_status, -1}; normal after stop/1" do
      port = sleep_port()
      {:os_pid, os_pid} = Port.info(port, :os_pid)
      {:ok, pid, ^os_pid} = :exec.manage(port, [:monitor])
      assert os_pid in :exec.which_children()
      :ok = :exec.kill(os_pid, 9)
      assert_receive {:DOWN, ^os_pid, :process, ^pid, {:exit_status, -1}}, 5000

      port = sleep_port()
      {:ok, pid, os_pid} = :exec.manage(port, [:monitor])
      :ok = :exec.stop(pid)
      assert_receive {:DOWN, ^os_pid, :process, ^pid, :normal}, 5000
    end

    test "no such process: {error, not_found}" do
      assert :exec.manage(dead_pid(), []) == {:error, :not_found}
    end
  end

  test "ospid/1 speaks erlexec's {{From, Ref}, ospid} protocol" do
    {:ok, pid, os_pid} = :exec.run(~c"sleep 100", [])
    assert :exec.ospid(pid) == os_pid
    ref = make_ref()
    send(pid, {{self(), ref}, :ospid})
    assert_receive {^ref, ^os_pid}, 5000

    # Any process may answer it (exexec's tests do).
    other =
      spawn_link(fn ->
        receive do: ({{from, ref}, :ospid} -> send(from, {ref, {:error, :testing}}))
      end)

    assert :exec.ospid(other) == {:error, :testing}
    :ok = :exec.kill(os_pid, 9)
  end

  test "a forged child message makes nobody a proxy: kill/2 cannot reach another's process" do
    # A Tether process that is not the exec server's.
    {:ok, _pid, os_pid} = Tether.run(["sleep", "100"], [:monitor])
    {:ok, _, exec_os_pid} = :exec.run(~c"sleep 100", [])
    Kernel.send(Process.whereis(:exec), {:"$exec_child", self(), os_pid})

    refute os_pid in :exec.which_children()
    assert :exec.pid(os_pid) == :undefined

    assert :exec.kill(os_pid, 9) ==
             {:error, ~c"Cannot kill a pid not managed by this application"}

    assert Tether.status(os_pid) == {:status, :running}
    :ok = :exec.kill(exec_os_pid, 9)
    :ok = Tether.kill(os_pid, :sigkill)
    assert_receive {:DOWN, ^os_pid, :process, _, _}, 5000
  end

  test "the caller's death stops its processes" do
    parent = self()

    caller =
      spawn(fn ->
        {:ok, _, os_pid} = :exec.run(~c"sleep 100", [])
        send(parent, {:os_pid, os_pid})
        Process.sleep(:infinity)
      end)

    assert_receive {:os_pid, os_pid}, 5000
    Process.exit(caller, :kill)
    assert wait_gone([os_pid]) == []
  end

  # A pid no process has: one that just exited and was reaped.
  # A port running `sleep 100`, once it runs: until erl_child_setup's fork executes the program
  # it ignores SIGTERM, so a stop in that window is lost and only the SIGKILL after
  # kill_timeout (5 s) ends it.
  defp sleep_port do
    port = Port.open({:spawn_executable, System.find_executable("sleep")}, args: ["100"])
    {:os_pid, os_pid} = Port.info(port, :os_pid)
    assert wait_until(fn -> File.read("/proc/#{os_pid}/comm") == {:ok, "sleep\n"} end)
    port
  end

  defp dead_pid do
    {:ok, pid, os_pid} = Tether.run(["true"], [:monitor])
    assert_receive {:DOWN, ^os_pid, :process, ^pid, :normal}, 5000
    os_pid
  end

  # Receives stdout of os_pid until exactly `expected` has arrived (chunks may split it).
  defp receive_bytes(os_pid, expected, got \\ "") do
    cond do
      got == expected ->
        true

      String.starts_with?(expected, got) ->
        receive do
          {:stdout, ^os_pid, data} -> receive_bytes(os_pid, expected, got <> data)
        after
          5000 -> flunk("expected #{inspect(expected)}, got #{inspect(got)}")
        end

      true ->
        flunk("expected #{inspect(expected)}, got #{inspect(got)}")
    end
  end

  # The state letter of /proc/<pid>/stat: "S" sleeping, "T" stopped by a signal.
  defp run_state(os_pid) do
    case File.read("/proc/#{os_pid}/stat") do
      {:ok, stat} -> stat |> String.split(") ") |> List.last() |> String.split(" ") |> hd()
      {:error, _} -> nil
    end
  end
end
