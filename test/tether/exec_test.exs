defmodule Tether.ExecTest do
  use ExUnit.Case, async: true
  import Tether.OsHelpers

  doctest :exec
  doctest Tether.Exec.Options

  test "Erlang code using exec:run/2 works unchanged (EUnit module)" do
    assert :eunit.test(:exec_usage_tests, [:no_tty]) == :ok
  end

  test "a supervision tree listing :exec starts cleanly" do
    {:ok, sup} = Supervisor.start_link([:exec], strategy: :one_for_one)
    assert [{:exec, pid, :worker, _}] = Supervisor.which_children(sup)
    assert is_pid(pid)
    Supervisor.stop(sup)
  end

  # The calls of our users' TestCluster.Manager design (../shared/seed), as written there.
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
    assert :exec.stop(os_pid) == {:error, :no_process}
    assert :exec.kill(os_pid, 9) == {:error, :no_process}
    assert wait_gone([os_pid]) == []
  end

  test "stop_and_wait, which_children, manage, winsz" do
    {:ok, _pid, os_pid} = :exec.run(~c"sleep 100", [])
    assert os_pid in :exec.which_children()
    assert :exec.stop_and_wait(os_pid, 5000) == :normal

    port = Port.open({:spawn_executable, System.find_executable("sleep")}, args: ["100"])
    {:ok, _pid, managed} = :exec.manage(port, [:monitor])
    :ok = :exec.kill(managed, 9)
    assert_receive {:DOWN, ^managed, :process, _, :unknown}, 5000

    {:ok, _pid, pty} = :exec.run(~c"sh", [:pty, :stdin, :stdout, {:winsz, {20, 70}}])
    assert :exec.winsz(pty, 30, 100) == :ok
    assert :exec.pty_opts(pty, winsz: {31, 101}) == :ok
    :exec.stop(pty)
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

  test "the {stdout, File, Opts} and {stdout, stderr} forms" do
    path = Path.join(System.tmp_dir!(), "tether-exec-#{System.unique_integer([:positive])}")

    {:ok, []} =
      :exec.run(~c"echo one", [
        :sync,
        {:stdout, String.to_charlist(path), [:append, {:mode, 0o600}]}
      ])

    {:ok, []} = :exec.run(~c"echo two", [:sync, {:stdout, String.to_charlist(path), [:append]}])
    assert File.read!(path) == "one\ntwo\n"
    File.rm!(path)
    assert {:ok, [stderr: ["x\n"]]} = :exec.run(~c"echo x", [:sync, :stderr, {:stdout, :stderr}])
  end
end
