defmodule Tether.CapabilitiesTest do
  # `{:capabilities, caps}`: the child runs with exactly those Linux capabilities (effective,
  # permitted, inheritable, ambient: they survive execve), as root or as another user; a root
  # child loses the others from its bounding set too. Read from /proc/<os_pid>/status.
  use ExUnit.Case, async: true
  import Bitwise
  import Tether.OsHelpers

  @root File.read!("/proc/self/status") =~ ~r/^Uid:\s+0\s/m
  @kill 1 <<< 5
  @net_bind_service 1 <<< 10

  # A capability this VM does not hold (nil when it holds every one), for the refusals.
  @unheld Tether.Options.capability_names(bnot(held_capabilities()) &&& (1 <<< 41) - 1)
          |> List.first()

  # Starts `sleep 30` with `options`; returns its os_pid (stopped after the test).
  defp sleeper(options) do
    {:ok, pid, os_pid} = Tether.run(["sleep", "30"], options)
    on_exit(fn -> Tether.stop(pid) end)
    os_pid
  end

  # The exit code of `sh -c script` run with `options`.
  defp exit_code(script, options) do
    {:ok, pid, os_pid} = Tether.run(["sh", "-c", script], [:monitor | options])

    receive do
      {:DOWN, ^os_pid, :process, ^pid, :normal} -> 0
      {:DOWN, ^os_pid, :process, ^pid, {:exit_status, code}} -> code
    after
      5000 -> flunk("#{script} did not exit")
    end
  end

  describe "a child run as another user" do
    @describetag skip: not @root && "needs root"

    test "holds exactly the capabilities asked for, ambient so that they survive execve" do
      os_pid = sleeper(user: "nobody", capabilities: [:kill, :net_bind_service])
      wanted = @kill ||| @net_bind_service

      assert %{effective: ^wanted, permitted: ^wanted, inheritable: ^wanted, ambient: ^wanted} =
               capabilities(os_pid)

      # Its bounding set is left alone, as for any child of another user.
      assert capabilities(os_pid).bounding == capabilities("self").bounding
    end

    test "passes them on to the programs it runs (a shell's child)" do
      {:ok, pid, os_pid} =
        Tether.run(["sh", "-c", "sleep 30 & echo $!; wait"], [
          :stdout,
          user: "nobody",
          capabilities: [:cap_kill]
        ])

      on_exit(fn -> Tether.stop(pid) end)
      grandchild = os_pid |> first_line() |> String.to_integer()
      assert %{effective: @kill, permitted: @kill, ambient: @kill} = capabilities(grandchild)
    end

    test "holds none without the option" do
      os_pid = sleeper(user: "nobody")

      assert %{effective: 0, permitted: 0, inheritable: 0, ambient: 0} = capabilities(os_pid)
    end

    test "can use them: with :kill it may signal root's processes, without it not" do
      target = sleeper([])
      assert exit_code("kill -0 #{target}", user: "nobody") == 1
      assert exit_code("kill -0 #{target}", user: "nobody", capabilities: [:kill]) == 0
    end

    test "with :all holds every capability the VM holds" do
      held = held_capabilities()
      os_pid = sleeper(user: "nobody", capabilities: :all)
      assert %{effective: ^held, permitted: ^held, ambient: ^held} = capabilities(os_pid)
    end
  end

  describe "a child that runs as root" do
    @describetag skip: not @root && "needs root"

    test "holds only those asked for, and loses the others from its bounding set" do
      os_pid = sleeper(capabilities: [:kill, :net_bind_service])
      wanted = @kill ||| @net_bind_service

      assert capabilities(os_pid) == every_set(wanted)
    end

    test "with [] holds none at all: it may not signal another user's process" do
      target = sleeper(user: "nobody")
      assert exit_code("kill -0 #{target}", []) == 0
      assert exit_code("kill -0 #{target}", capabilities: []) == 1
      os_pid = sleeper(capabilities: [])
      assert Enum.all?(Map.values(capabilities(os_pid)), &(&1 == 0))
    end

    test "with :all keeps what the VM holds" do
      held = held_capabilities()
      os_pid = sleeper(capabilities: :all)
      assert %{effective: ^held, permitted: ^held, ambient: ^held} = capabilities(os_pid)
    end

    test "without the option holds every capability, as root does" do
      os_pid = sleeper([])
      held = held_capabilities()
      assert %{effective: ^held, permitted: ^held, ambient: 0} = capabilities(os_pid)
    end
  end

  describe "capabilities the VM does not hold" do
    @describetag skip: (@unheld == nil && "this VM holds every capability") || false

    test "are refused at run/2 with {:error, :eperm}, for root as for another user" do
      name = @unheld
      assert Tether.run(["true"], capabilities: [:kill, name]) == {:error, :eperm}

      if @root,
        do: assert(Tether.run(["true"], user: "nobody", capabilities: [name]) == {:error, :eperm})
    end
  end

  test "bad values raise ArgumentError naming the option" do
    for bad <- [[:no_such_cap], :kill, [:kill | :net_raw], ["kill"], nil] do
      assert_raise ArgumentError, ~r/invalid value for :capabilities option/, fn ->
        Tether.run(["true"], capabilities: bad)
      end
    end
  end
end
