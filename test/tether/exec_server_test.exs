defmodule Tether.ExecServerTest do
  # The `exec` server's life, as erlexec's: started by start/0,1, start_link/1, the :erlexec
  # application or first use; its children stop with it; its start options. These tests stop
  # and kill the one `exec` server of the VM, so they run alone.
  use ExUnit.Case, async: false
  import Tether.OsHelpers

  @root File.read!("/proc/self/status") =~ ~r/^Uid:\s+0\s/m

  setup do
    stop_exec()
    on_exit(&stop_exec/0)
  end

  defp stop_exec do
    Application.stop(:erlexec)

    case Process.whereis(:exec) do
      nil ->
        :ok

      pid ->
        ref = Process.monitor(pid)
        Process.exit(pid, :kill)
        receive do: ({:DOWN, ^ref, :process, ^pid, _} -> :ok)
    end
  end

  # Starts `sleep 20 &` from a shell child and returns {shell os_pid, the sleep's os_pid}.
  defp shell_with_background_job(options) do
    {:ok, _pid, os_pid} = :exec.run(~c"sleep 20 & echo $!; wait", [:stdout | options])
    {os_pid, os_pid |> first_line() |> String.to_integer()}
  end

  describe "the exec server" do
    test "start/0 registers it as exec; a second start gives {error, {already_started, Pid}}" do
      assert {:ok, pid} = :exec.start()
      assert Process.whereis(:exec) == pid
      assert :exec.start([]) == {:error, {:already_started, pid}}
      {:links, links} = Process.info(self(), :links)
      refute pid in links
    end

    test "start_link/1 links it to the caller" do
      Process.flag(:trap_exit, true)
      assert {:ok, pid} = :exec.start_link([])
      {:links, links} = Process.info(self(), :links)
      assert pid in links
      Process.exit(pid, :shutdown)
      assert_receive {:EXIT, ^pid, :shutdown}, 5000
    end

    test "a supervision tree listing :exec starts it" do
      {:ok, sup} = Supervisor.start_link([:exec], strategy: :one_for_one)
      assert [{:exec, pid, :worker, _}] = Supervisor.which_children(sup)
      assert Process.whereis(:exec) == pid
      Supervisor.stop(sup)
    end

    test "it starts on first use when nobody started it" do
      assert Process.whereis(:exec) == nil
      assert {:ok, [stdout: ["x\n"]]} = :exec.run(~c"echo x", [:sync, :stdout])
      assert is_pid(Process.whereis(:exec))
    end

    test "gen_server:stop stops its children and what they left in their groups" do
      {:ok, pid} = :exec.start()
      {shell, sleep} = shell_with_background_job([])
      assert :gen_server.stop(pid) == :ok
      # Gone when stop returns (erlexec's finalize_shutdown_kills_shell_descendants).
      refute alive?(shell)
      refute alive?(sleep)
    end

    test "what a child leaves behind runs on while the server does, as in erlexec, and goes with it" do
      {:ok, pid} = :exec.start()
      {:ok, _, shell} = :exec.run(~c"sleep 100 >/dev/null 2>&1 & echo $!", [:stdout, :monitor])
      sleep = shell |> first_line() |> String.to_integer()
      assert_receive {:DOWN, ^shell, :process, _, :normal}, 5000
      # A stopped leftover is gone ~10 ms after the DOWN; this one still runs 300 ms later.
      refute wait_gone([sleep], 300) == []
      # exexec's manage test: the job is there to be managed.
      assert {:ok, _, ^sleep} = :exec.manage(sleep, [])
      assert :gen_server.stop(pid) == :ok
      assert wait_gone([sleep]) == []
    end

    test "a killed server takes its children; the next start works at once, with a new table" do
      {:ok, pid} = :exec.start()
      {:ok, proxy, os_pid} = :exec.run(~c"sleep 100", [:monitor])
      {_shell, sleep} = shell_with_background_job([])
      Process.exit(pid, :kill)
      assert_receive {:DOWN, ^os_pid, :process, ^proxy, :port_closed}, 5000
      assert wait_gone([os_pid, sleep]) == []

      assert {:ok, new} = :exec.start()
      assert new != pid
      {:ok, proxy, os_pid} = :exec.run(~c"sleep 100", [])
      assert :exec.pid(os_pid) == proxy
      assert :exec.which_children() == [os_pid]
      :ok = :exec.kill(os_pid, 9)
    end

    test "ospid/1 of a proxy while the server is killed during the call: no exit for the caller" do
      {:ok, server} = :exec.start()
      {:ok, proxy, os_pid} = :exec.run(~c"sleep 100", [:monitor])
      # The server holds the question unanswered until it is killed.
      :erlang.suspend_process(server)
      parent = self()
      {asker, ref} = spawn_monitor(fn -> Kernel.send(parent, {:answer, :exec.ospid(proxy)}) end)
      wait_until(fn -> Process.info(server, :message_queue_len) == {:message_queue_len, 1} end)
      Process.exit(server, :kill)

      # erlexec's ospid/1 asks the pid itself: the proxy answers, or is gone with the server.
      assert_receive {:answer, answer}, 10_000
      assert answer in [os_pid, {:error, :no_process}]
      assert_receive {:DOWN, ^ref, :process, ^asker, :normal}
      assert_receive {:DOWN, ^os_pid, :process, ^proxy, :port_closed}, 5000
      assert wait_gone([os_pid]) == []
    end
  end

  describe "the erlexec application" do
    test "a run while its supervisor restarts the exec server does not start a rival" do
      {:ok, _} = Application.ensure_all_started(:erlexec)
      sup = Process.whereis(:exec_app)
      server = Process.whereis(:exec)
      # The supervisor sees the server's death only once resumed: meanwhile no exec runs.
      :erlang.suspend_process(sup)
      ref = Process.monitor(server)
      Process.exit(server, :kill)
      assert_receive {:DOWN, ^ref, :process, ^server, :killed}
      parent = self()
      spawn(fn -> Kernel.send(parent, {:ran, :exec.run(~c"true", [:sync])}) end)

      # The run asks the supervisor (its call queued behind the server's EXIT), or, as it once
      # did, starts its own server.
      wait_until(fn ->
        Process.info(sup, :message_queue_len) >= {:message_queue_len, 2} or
          Process.whereis(:exec) != nil
      end)

      :erlang.resume_process(sup)

      # It waited for the supervisor (erlexec's call would find no server), and the server
      # that runs is the application's: its restart did not fail on a rival.
      assert_receive {:ran, {:ok, []}}, 10_000
      restarted = Process.whereis(:exec)
      assert [{:exec, ^restarted, :worker, _}] = Supervisor.which_children(:exec_app)
      assert :erlexec in Enum.map(Application.started_applications(), &elem(&1, 0))
    end

    test "another process registered as exec_app is not asked for the server" do
      impostor = spawn_link(fn -> receive do: (:never -> :ok) end)
      Process.register(impostor, :exec_app)
      assert :exec.run(~c"true", [:sync]) == {:ok, []}
      Process.unregister(:exec_app)
    end

    test "Application.ensure_all_started(:erlexec) starts the exec server under it" do
      assert {:ok, started} = Application.ensure_all_started(:erlexec)
      assert :erlexec in started
      pid = Process.whereis(:exec)
      assert [{:exec, ^pid, :worker, _}] = Supervisor.which_children(:exec_app)
      {:ok, _, os_pid} = :exec.run(~c"sleep 100", [])
      assert :ok = Application.stop(:erlexec)
      assert Process.whereis(:exec) == nil
      assert wait_gone([os_pid]) == []
    end

    test "application:start(erlexec) reads config :erlexec" do
      Application.put_env(:erlexec, :debug, 3)
      on_exit(fn -> Application.delete_env(:erlexec, :debug) end)
      assert :application.start(:erlexec) == :ok
      assert :exec.debug(0) == {:ok, 3}
    end
  end

  describe "start options" do
    test "erlexec's start-time errors" do
      assert {:error, ~c"Cannot specify effective user" ++ _} =
               :exec.start([{:user, ~c"xxxx"}, {:limit_users, [:yyyy]}])

      assert {:error, ~c"Cannot restrict users" ++ _} = :exec.start([{:limit_users, [:yyyy]}])

      assert {:error, ~c"Not allowed to run without restricting effective users" ++ _} =
               :exec.start([:root, {:user, ~c"xxxx"}])

      assert {:error, ~c"Not allowed to run without providing effective user " ++ _} =
               :exec.start([:root, {:limit_users, [:yyyy]}])

      assert :exec.start([:bogus]) == {:error, {:invalid_option, :bogus}}

      assert :exec.start([{:capabilities, [:no_such_cap]}]) ==
               {:error, {:invalid_option, {:capabilities, [:no_such_cap]}}}

      # An improper list is an error, not a crash of the caller.
      users = [~c"nobody" | :x]

      assert :exec.start([:root, {:user, ~c"nobody"}, {:limit_users, users}]) ==
               {:error, {:invalid_option, {:limit_users, users}}}

      assert Process.whereis(:exec) == nil
    end

    test "root, {user, U}, {limit_users, L}: children run as U; {user, X} only for X in L" do
      options = [:root, {:user, ~c"nobody"}, {:limit_users, [~c"daemon"]}]

      if whoami() == "root" do
        assert {:ok, _} = :exec.start(options)
        assert :exec.run(~c"id -un", [:sync, :stdout]) == {:ok, [stdout: ["nobody\n"]]}

        assert :exec.run(~c"id -un", [:sync, :stdout, {:user, ~c"daemon"}]) ==
                 {:ok, [stdout: ["daemon\n"]]}

        assert :exec.run(~c"id -un", [:sync, {:user, ~c"root"}]) ==
                 {:error, ~c"User root is not allowed to run commands!"}
      else
        # Switching users needs root, for erlexec's port program as for us.
        assert {:error, _} = :exec.start(options)
      end
    end

    @tag skip: not @root && "needs root"
    test "root mode: a run as another user holds the capabilities it asks for; none without" do
      assert {:ok, _} = :exec.start([:root, {:user, ~c"nobody"}, {:limit_users, [~c"nobody"]}])
      asked = [{:capabilities, [:kill, :net_bind_service]}]
      bounding = capabilities("self").bounding

      with_sleep([{:user, ~c"nobody"} | asked], fn os_pid ->
        assert capabilities(os_pid) == %{
                 effective: 0x420,
                 permitted: 0x420,
                 inheritable: 0x420,
                 ambient: 0x420,
                 bounding: bounding
               }
      end)

      # The effective user's children too.
      with_sleep(asked, fn os_pid ->
        assert %{effective: 0x420, permitted: 0x420, ambient: 0x420} = capabilities(os_pid)
      end)

      with_sleep([{:user, ~c"nobody"}], fn os_pid ->
        assert %{effective: 0, permitted: 0, inheritable: 0, ambient: 0} = capabilities(os_pid)
      end)
    end

    @tag skip: not @root && "needs root"
    test "{capabilities, Caps}: no child holds more; a root child holds exactly those" do
      assert {:ok, _} = :exec.start([{:capabilities, [:cap_kill, :net_bind_service]}])
      wanted = 0x420

      with_sleep([], fn os_pid ->
        assert capabilities(os_pid) == every_set(wanted)
      end)

      # A run asks within them (erlexec: of what its port program holds).
      with_sleep([{:capabilities, [:kill, :sys_admin]}], fn os_pid ->
        assert %{effective: 0x20, permitted: 0x20, bounding: 0x20} = capabilities(os_pid)
      end)

      with_sleep([{:capabilities, :all}], fn os_pid ->
        assert %{effective: ^wanted, bounding: ^wanted} = capabilities(os_pid)
      end)
    end

    @tag skip: not @root && "needs root"
    test "{capabilities, Caps} in root mode bounds what a run as another user gets" do
      options = [:root, {:user, ~c"nobody"}, {:limit_users, [~c"nobody"]}]
      assert {:ok, _} = :exec.start([{:capabilities, [:kill]} | options])

      with_sleep([{:capabilities, [:kill, :net_bind_service]}], fn os_pid ->
        assert %{effective: 0x20, permitted: 0x20, ambient: 0x20} = capabilities(os_pid)
      end)

      with_sleep([], fn os_pid ->
        assert %{effective: 0, permitted: 0, ambient: 0} = capabilities(os_pid)
      end)
    end

    test "{capabilities, all} and {capabilities, []} set no limit (erlexec's default)" do
      held = held_capabilities()

      for caps <- [:all, []] do
        stop_exec()
        assert {:ok, _} = :exec.start([{:capabilities, caps}])

        with_sleep([], fn os_pid ->
          assert %{effective: ^held, permitted: ^held, ambient: 0} = capabilities(os_pid)
        end)
      end
    end

    test "{env, Env} is added to every child's environment" do
      assert {:ok, _} = :exec.start([{:env, [{~c"FROM_START", ~c"yes"}]}])
      assert :exec.run(~c"echo $FROM_START", [:sync, :stdout]) == {:ok, [stdout: ["yes\n"]]}
    end
  end

  describe "string commands" do
    test "run under $SHELL -c, and /bin/sh when SHELL is unset" do
      shell = System.get_env("SHELL")

      on_exit(fn ->
        if shell, do: System.put_env("SHELL", shell), else: System.delete_env("SHELL")
      end)

      System.put_env("SHELL", System.find_executable("bash"))
      # bash's arithmetic, as erlexec's suite and README use it.
      assert :exec.run(~c"echo $[1+2]", [:sync, :stdout]) == {:ok, [stdout: ["3\n"]]}

      System.delete_env("SHELL")
      assert :exec.run(~c"echo $0", [:sync, :stdout]) == {:ok, [stdout: ["/bin/sh\n"]]}
    end
  end

  # Runs `sleep 30` with `options`, calls `fun` with its os_pid, stops it.
  defp with_sleep(options, fun) do
    {:ok, _pid, os_pid} = :exec.run([~c"sleep", ~c"30"], options)

    try do
      fun.(os_pid)
    after
      :exec.stop(os_pid)
    end
  end

  defp whoami do
    {name, 0} = System.cmd("id", ["-un"])
    String.trim(name)
  end
end
