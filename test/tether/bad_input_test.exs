defmodule Tether.BadInputTest do
  # Compares which_processes/0 before and after: not async.
  use ExUnit.Case, async: false

  test "bad commands raise ArgumentError and spawn nothing" do
    before = Tether.which_processes()

    for command <- [
          [],
          [""],
          ["a\0b"],
          ["echo", "a\0b"],
          ["echo", :atom],
          ["echo", 1],
          :atom,
          42,
          nil,
          "a\0b"
        ] do
      assert_raise ArgumentError, fn -> Tether.run(command) end
    end

    assert Tether.which_processes() -- before == []
  end

  test "nothing is left behind by a failed spawn" do
    before = Tether.which_processes()
    {:error, :enoent} = Tether.run(["/nonexistent/program"], [:stdout, :stderr, :stdin])
    assert Tether.which_processes() -- before == []
  end

  test "unknown options and bad values name the option" do
    cases = [
      {[:colour], ~r/unknown option :colour/},
      {[colour: :blue], ~r/unknown option :colour/},
      {[{:stdout, :nowhere}], ~r/:stdout option/},
      {[{:stderr, 42}], ~r/:stderr option/},
      {[{:stdout, :stderr}, {:stderr, :stdout}], ~r/cannot both/},
      {[{:kill_sequence, [sigfoo: 1]}], ~r/:kill_sequence option/},
      {[{:rlimit, [bogus: 1]}], ~r/:rlimit option/},
      {[{:nice, 40}], ~r/:nice option/},
      {[{:idle_timeout, 0}], ~r/:idle_timeout option/},
      {[{:winsz, {0, 80}}], ~r/:winsz option/},
      {[{:env, [{"A=B", "1"}]}], ~r/:env/},
      {[{:env, [{"A", "1\0"}]}], ~r/:env/},
      {[{:env, :nope}], ~r/:env option/},
      {[{:env, [:bogus]}], ~r/:env option/},
      {[{:cd, 42}], ~r/:cd option/},
      {[{:cd, ""}], ~r/:cd option/},
      {[{:cd, "/tmp\0"}], ~r/:cd option/},
      {[{:kill_timeout, -1}], ~r/:kill_timeout option/},
      {[{:kill_timeout, "5"}], ~r/:kill_timeout option/},
      {[{:kill_group, :maybe}], ~r/:kill_group option/},
      {[{:monitor, 1}], ~r/:monitor option/},
      {[{1, 2}], ~r/invalid entry/},
      {:not_a_list, ~r/must be a list/}
    ]

    for {options, message} <- cases do
      error = assert_raise ArgumentError, fn -> Tether.run(["true"], options) end
      assert error.message =~ message, "#{inspect(options)}: #{error.message}"
    end
  end

  test "bad signals raise, unknown os_pids are :no_process" do
    {:ok, _, os_pid} = Tether.run(["sleep", "100"], [:monitor])

    for signal <- [:sigfoo, 65, -1, "sigterm", nil, 1.5] do
      assert_raise ArgumentError, ~r/invalid signal/, fn -> Tether.kill(os_pid, signal) end
    end

    assert Tether.status(os_pid) == {:status, :running}

    for unknown <- [0, -5, 2 ** 40, 999_999_999] do
      assert Tether.stop(unknown) == {:error, :no_process}
      assert Tether.kill(unknown, :sigterm) == {:error, :no_process}
      assert Tether.status(unknown) == {:error, :no_process}
      assert Tether.pid(unknown) == {:error, :no_process}
    end

    {dead, ref} = spawn_monitor(fn -> :ok end)
    assert_receive {:DOWN, ^ref, :process, ^dead, :normal}
    assert Tether.stop(dead) == {:error, :no_process}
    assert Tether.os_pid(dead) == {:error, :no_process}

    for bad <- ["123", :pid, [1], 1.0] do
      assert_raise ArgumentError, fn -> Tether.stop(bad) end
    end

    :ok = Tether.kill(os_pid, :sigkill)
    assert_receive {:DOWN, ^os_pid, _, _, {:signal, :sigkill, false}}, 5000
  end

  test "the raw NIF functions refuse wrong types with ArgumentError, and the VM lives" do
    for {fun, args} <- [
          {:stop, [-1]},
          {:stop, ["x"]},
          {:kill, [1, 999]},
          {:kill, [:a, 9]},
          {:status, [nil]},
          {:process_of, [1.5]},
          {:signal_number, [123]},
          {:start, [%{}, self(), self(), make_ref()]},
          {:start, [%{argv: 1}, self(), self(), make_ref()]},
          {:start, [:spec, self(), self(), make_ref()]},
          {:start, [%{}, :not_a_pid, self(), make_ref()]},
          {:stop_all, [:not_a_pid]}
        ] do
      assert_raise ArgumentError, fn -> apply(Tether.Native, fun, args) end
    end
  end

  # Issue #14: each of these raised something else (FunctionClauseError, Protocol.UndefinedError,
  # a raw :ets or :lists error, {:error, :badarg}) or was accepted.
  describe "every bad input gets ArgumentError naming the option" do
    # A command line no other process has: whether it ran is read from /proc.
    defp marker, do: "41.#{System.unique_integer([:positive])}"

    defp ran?(marker), do: Tether.OsHelpers.cmdline_running?(marker)

    defp assert_refused(message, fun) do
      before = Tether.which_processes()
      error = assert_raise ArgumentError, fun
      assert error.message =~ message
      assert Tether.which_processes() -- before == []
    end

    test "run/2 options" do
      for {options, message} <- [
            {[active: [{:stdout, true} | :x]], ~r/:active option/},
            {[active: [:x]], ~r/:active option/},
            {[stdout: {"out.txt", [:append | :x]}], ~r/:stdout option/},
            {[max_output: 2 ** 70], ~r/:max_output option/},
            {[env: [{"A", true}]], ~r/:env option/},
            {[stderr: {"err.txt", [{:mode, 0o6755}]}], ~r/:mode option/}
          ] do
        assert_refused(message, fn -> Tether.run(["true"], options) end)
      end

      assert_refused(~r/must be a list/, fn -> Tether.run_link(["true"], :x) end)
    end

    test "activate/3 with a stream that is not :stdout, :stderr or :all" do
      {:ok, _, os_pid} = Tether.run(["sleep", "100"], [:monitor, :stdout, active: :once])

      for stream <- [:foo, nil, "stdout", 1] do
        assert_raise ArgumentError, ~r/invalid stream/, fn ->
          Tether.activate(os_pid, true, stream)
        end
      end

      assert_raise ArgumentError, ~r/:active option/, fn -> Tether.activate(os_pid, -1) end
      assert Tether.activate(os_pid, true, :stdout) == :ok
      :ok = Tether.kill(os_pid, :sigkill)
      assert_receive {:DOWN, ^os_pid, _, _, {:signal, :sigkill, false}}, 5000
    end

    test "cmd/3 options, checked before anything runs" do
      m = marker()

      for {options, message} <- [
            {[timeout: -1], ~r/:timeout option/},
            {[timeout: 0], ~r/:timeout option/},
            {[timeout: 1.5], ~r/:timeout option/},
            {[timeout: :never], ~r/:timeout option/},
            {[env: [{"A", true}]], ~r/:env option/},
            {[into: 5], ~r/:into option/},
            {[input: 5], ~r/:input option/},
            {[input: [1000]], ~r/:input option/},
            # Found by the fuzzer: a fun of arity 0 passed as an Enumerable, then crashed.
            {[input: fn -> :x end], ~r/:input option/},
            {[stderr_to_stdout: :yes], ~r/:stderr_to_stdout option/},
            {[parallelism: 1], ~r/:parallelism option/},
            {[arg0: 5], ~r/:arg0 option/},
            {[{:cd, "/"} | :x], ~r/proper list/},
            {[:stdout], ~r/invalid entry/},
            {[colour: 1], ~r/unknown option :colour/}
          ] do
        assert_refused(message, fn -> Tether.cmd("sleep", [m], options) end)
      end

      refute ran?(m)
      assert_refused(~r/expects a program/, fn -> Tether.cmd(:sleep, [m]) end)
      assert_refused(~r/expects a program/, fn -> Tether.cmd("sleep", m) end)
      assert_refused(~r/expects a program/, fn -> Tether.cmd("sleep", [m], :x) end)
      refute ran?(m)
    end

    test "stream/2 options, checked where the stream is built" do
      for {options, message} <- [
            {:x, ~r/must be a list/},
            {[{:cd, "/"} | :x], ~r/proper list/},
            {[{}], ~r/invalid entry/},
            {[input: 5], ~r/:input option/},
            {[input: [:a]], ~r/:input option/},
            {[node: self()], ~r/:node option/}
          ] do
        assert_refused(message, fn -> Tether.stream(["cat"], options) end)
      end

      # Atoms among the options, with :input: Keyword.pop/2 raised FunctionClauseError here.
      assert Tether.stream(["cat"], [:pty, input: "x\n"]) |> Enum.take(1) == ["x\r\n"]
    end

    test "Tether.Daemon options, in the caller" do
      for {options, message} <- [
            {:x, ~r/keyword list/},
            {[cmd: ["true"], run: :x], ~r/:run option/},
            {[cmd: ["true"], run: [{:cd, "/"} | :x]], ~r/:run option/},
            {[cmd: ["true"], run: [node: self()]], ~r/:node option/},
            {[cmd: ["true"], run: [:sync]], ~r/:sync in :run/},
            {[cmd: ["true"], run: [monitor: false]], ~r/:monitor in :run/},
            {[cmd: ["true"], run: [active: :once]], ~r/:active in :run/},
            {[cmd: ["true"], run: [colour: 1]], ~r/unknown option :colour/},
            {[cmd: ["true"], log_level: :loud], ~r/:log_level option/},
            {[cmd: ["true"], restart: :sometimes], ~r/:restart option/},
            {[cmd: ["true"], colour: 1], ~r/unknown option :colour/},
            {[cmd: :x], ~r/command must be/}
          ] do
        assert_refused(message, fn -> Tether.Daemon.start_link(options) end)
      end

      assert_raise ArgumentError, ~r/:run option/, fn ->
        Tether.Daemon.child_spec(cmd: ["true"], run: :x)
      end
    end
  end
end
