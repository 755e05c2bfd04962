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

    assert Tether.which_processes() == before
  end

  test "nothing is left behind by a failed spawn" do
    before = Tether.which_processes()
    {:error, :enoent} = Tether.run(["/nonexistent/program"], [:stdout, :stderr, :stdin])
    assert Tether.which_processes() == before
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
end
