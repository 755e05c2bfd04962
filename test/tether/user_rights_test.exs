defmodule Tether.UserRightsTest do
  # A `{:user, name}` child has that user's rights and environment; `:max_output` delivers
  # exactly its bytes; a kill command is a child like any other. Switching users needs root.
  use ExUnit.Case, async: true
  import Tether.OsHelpers

  @root File.read!("/proc/self/status") =~ ~r/^Uid:\s+0\s/m

  defp passwd(name) do
    {line, 0} = System.cmd("getent", ["passwd", name])
    [^name, _, uid, gid, _gecos, home, shell] = line |> String.trim() |> String.split(":")
    %{uid: String.to_integer(uid), gid: String.to_integer(gid), home: home, shell: shell}
  end

  # A fresh path in /tmp (world-writable, sticky), removed after the test.
  defp tmp_path(tag) do
    path = Path.join("/tmp", "tether-#{tag}-#{System.unique_integer([:positive])}")
    on_exit(fn -> File.rm(path) end)
    path
  end

  defp owner(path) do
    {:ok, %File.Stat{uid: uid, gid: gid}} = File.stat(path)
    {uid, gid}
  end

  describe "{:user, name} opens its files with that user's rights" do
    @describetag skip: not @root && "needs root"

    test "a file the user may not read is refused at run/2" do
      assert Tether.run(["cat"], [:stdout, :monitor, user: "nobody", stdin: "/etc/shadow"]) ==
               {:error, :eacces}

      # As root it is readable: the refusal is the user's, not the path's.
      assert {:ok, _, os_pid} = Tether.run(["true"], [:monitor, stdin: "/etc/shadow"])
      assert_receive {:DOWN, ^os_pid, :process, _, :normal}, 5000
    end

    test "a root-owned 0600 file is neither truncated nor appended to" do
      path = tmp_path("root-only")
      File.write!(path, "root's\n")
      File.chmod!(path, 0o600)

      for stdout <- [path, {path, [:append]}],
          options <- [[stdout: stdout], [stderr: stdout], [stdout: :null, stderr: stdout]] do
        assert Tether.run(["echo", "x"], [user: "nobody"] ++ options) == {:error, :eacces}
      end

      assert File.read!(path) == "root's\n"
      assert owner(path) == {0, 0}
    end

    test "files it creates belong to the user, with the mode asked for" do
      %{uid: uid, gid: gid} = passwd("nobody")
      out = tmp_path("out")
      err = tmp_path("err")

      {:ok, _, os_pid} =
        Tether.run("echo out; echo err >&2", [
          :monitor,
          user: "nobody",
          stdout: out,
          stderr: {err, [:append, {:mode, 0o640}]}
        ])

      assert_receive {:DOWN, ^os_pid, :process, _, :normal}, 5000
      assert File.read!(out) == "out\n"
      assert File.read!(err) == "err\n"
      assert owner(out) == {uid, gid}
      assert owner(err) == {uid, gid}
      assert File.stat!(err).mode |> Bitwise.band(0o777) == 0o640
    end

    test "{:stderr, :stdout} follows a file opened by the user, and the reverse" do
      %{uid: uid} = passwd("nobody")

      for {file_stream, other} <- [stdout: {:stderr, :stdout}, stderr: {:stdout, :stderr}] do
        path = tmp_path("both")

        {:ok, _, os_pid} =
          Tether.run(
            "echo out; echo err >&2",
            [:monitor, user: "nobody"] ++ [{file_stream, path}, other]
          )

        assert_receive {:DOWN, ^os_pid, :process, _, :normal}, 5000
        assert File.read!(path) == "out\nerr\n"
        assert {^uid, _} = owner(path)
      end
    end

    test "with a pty, a redirected stdout is the user's file and stdin stays the terminal" do
      %{uid: uid} = passwd("nobody")
      path = tmp_path("pty")

      {:ok, _, os_pid} =
        Tether.run("test -t 0 && echo terminal; id -u", [
          :pty,
          :monitor,
          user: "nobody",
          stdout: path
        ])

      assert_receive {:DOWN, ^os_pid, :process, _, :normal}, 5000
      assert File.read!(path) == "terminal\n#{uid}\n"
      assert {^uid, _} = owner(path)
    end

    test "stdin from a file of the user's, and a file in a directory it cannot enter" do
      path = tmp_path("in")
      File.write!(path, "mine\n")
      %{uid: uid, gid: gid} = passwd("nobody")
      File.chown!(path, uid)
      File.chgrp!(path, gid)
      File.chmod!(path, 0o600)

      {:ok, _, os_pid} = Tether.run(["cat"], [:stdout, :monitor, user: "nobody", stdin: path])
      assert collect(os_pid) == {"mine\n", "", :normal}

      dir = tmp_path("dir")
      File.mkdir!(dir)
      File.chmod!(dir, 0o700)
      on_exit(fn -> File.rm_rf(dir) end)
      file = Path.join(dir, "new")
      assert Tether.run(["true"], user: "nobody", stdout: file) == {:error, :eacces}
      refute File.exists?(file)
    end

    test "open errors are reported as exec errors are, with or without a user" do
      assert Tether.run(["true"], stdin: "/no/such/file") == {:error, :enoent}
      assert Tether.run(["true"], stdout: "/no/such/dir/file") == {:error, :enoent}
      assert Tether.run(["true"], user: "nobody", stdin: "/no/such/file") == {:error, :enoent}
    end
  end

  describe "{:user, name} gets the user's HOME, USER, LOGNAME and SHELL" do
    @describetag skip: not @root && "needs root"

    @show ~s(echo "$HOME|$USER|$LOGNAME|$SHELL|${PATH-unset}")

    test "from the passwd entry, the rest of the environment inherited" do
      %{home: home, shell: shell} = passwd("nobody")
      path = System.fetch_env!("PATH")
      {:ok, [stdout: out]} = Tether.run(@show, [:sync, :stdout, user: "nobody"])
      assert IO.iodata_to_binary(out) == "#{home}|nobody|nobody|#{shell}|#{path}\n"
    end

    test ":env that sets or unsets them wins; :clear clears them too" do
      %{shell: shell} = passwd("nobody")

      env = [{"HOME", "/h"}, {"SHELL", false}]
      {:ok, [stdout: out]} = Tether.run(@show, [:sync, :stdout, user: "nobody", env: env])
      assert IO.iodata_to_binary(out) == "/h|nobody|nobody||#{System.fetch_env!("PATH")}\n"

      # `env` itself, not a shell (which would make up a PATH).
      env = [:clear, {"USER", "u"}]
      {:ok, [stdout: out]} = Tether.run(["env"], [:sync, :stdout, user: "nobody", env: env])
      assert IO.iodata_to_binary(out) == "USER=u\n"
      assert shell != ""
    end

    test "without :user the environment is the VM's" do
      {:ok, [stdout: out]} = Tether.run(@show, [:sync, :stdout])
      home = System.get_env("HOME", "")
      user = System.get_env("USER", "")
      logname = System.get_env("LOGNAME", "")
      shell = System.get_env("SHELL", "")
      path = System.fetch_env!("PATH")
      assert IO.iodata_to_binary(out) == "#{home}|#{user}|#{logname}|#{shell}|#{path}\n"
    end
  end

  describe "{:max_output, n}" do
    test "delivers exactly the first n bytes, then stops the process; info shows the cap" do
      n = 1_000_000
      {:ok, _, os_pid} = Tether.run(["yes"], [:monitor, :stdout, max_output: n])
      assert {out, "", {:signal, :sigterm, false}} = collect(os_pid)
      assert byte_size(out) == n
      assert out == :binary.copy("y\n", div(n, 2))
      info = Tether.info(os_pid)
      assert {info.stdout_bytes, info.output_capped} == {n, true}
    end

    test "counts both streams together" do
      n = 300_001

      {:ok, _, os_pid} =
        Tether.run("yes | tee /dev/stderr", [:monitor, :stdout, :stderr, max_output: n])

      assert {out, err, {:signal, :sigterm, false}} = collect(os_pid)
      assert byte_size(out) + byte_size(err) == n
      info = Tether.info(os_pid)
      assert {info.stdout_bytes + info.stderr_bytes, info.output_capped} == {n, true}
    end

    test "a process that writes no more than n is not stopped" do
      {:ok, _, os_pid} =
        Tether.run(["head", "-c", "1000", "/dev/zero"], [:monitor, :stdout, max_output: 1000])

      assert {out, "", :normal} = collect(os_pid)
      assert byte_size(out) == 1000
      assert Tether.info(os_pid).output_capped == false
    end

    test "a stopped process that ignores SIGTERM is killed after kill_timeout, with n bytes" do
      script = "trap '' TERM; yes"

      {:ok, _, os_pid} =
        Tether.run(["sh", "-c", script], [:monitor, :stdout, max_output: 4096, kill_timeout: 1])

      assert {out, "", {:signal, :sigkill, false}} = collect(os_pid)
      assert byte_size(out) == 4096
    end
  end

  describe "{:kill, command}" do
    defp survivors(pids) do
      for pid <- pids, into: "" do
        {stat, cgroup} = {File.read("/proc/#{pid}/stat"), File.read("/proc/#{pid}/cgroup")}
        "survivor #{pid}: #{inspect(stat)} #{inspect(cgroup)}\n"
      end
    end

    # A number of seconds no other test VM uses, to find the kill command by.
    defp unique_seconds, do: "#{System.pid()}#{System.unique_integer([:positive])}"

    # The live kill commands `sleep <marker>` (the shell, or the sleep it runs).
    defp processes_with(marker) do
      commands = ["/bin/sh\0-c\0sleep #{marker}\0", "sleep\0#{marker}\0"]

      for entry <- File.ls!("/proc"),
          String.match?(entry, ~r/^\d+$/),
          {:ok, cmdline} <- [File.read("/proc/#{entry}/cmdline")],
          cmdline in commands,
          pid = String.to_integer(entry),
          alive?(pid),
          do: pid
    end

    test "a kill command that hangs is gone with the child, within kill_timeout" do
      marker = unique_seconds()

      {:ok, _, os_pid} =
        Tether.run([script("ignore_term.sh")], [
          :monitor,
          :stdout,
          kill: "sleep #{marker}",
          kill_timeout: 1
        ])

      assert first_line(os_pid) == "ready"
      :ok = Tether.stop(os_pid)
      assert wait_until(fn -> processes_with(marker) != [] end)
      helpers = processes_with(marker)
      stopped_at = System.monotonic_time(:millisecond)
      assert_receive {:DOWN, ^os_pid, :process, _, {:signal, :sigkill, false}}, 5000
      down_after = System.monotonic_time(:millisecond) - stopped_at
      assert down_after <= 1500, "the :DOWN took #{down_after} ms"
      assert wait_gone(helpers, 1000) == []
      assert processes_with(marker) == []
    end

    @tag timeout: 120_000
    test "a kill command that hangs never outlives the VM" do
      marker = unique_seconds()

      code = """
      {:ok, _} = Application.ensure_all_started(:tether)
      {:ok, _, os_pid} = Tether.run([#{inspect(script("ignore_term.sh"))}],
        [:stdout, kill: "sleep #{marker}", kill_timeout: 600])
      receive do {:stdout, ^os_pid, "ready\\n"} -> :ok end
      :ok = Tether.stop(os_pid)
      IO.puts("STOPPED")
      Process.sleep(:infinity)
      """

      ebin = Path.join(:code.lib_dir(:tether), "ebin")
      {:ok, _, vm} = Tether.run(["elixir", "-pa", ebin, "-e", code], [:stdout, :monitor])
      assert_receive {:stdout, ^vm, "STOPPED\n"}, 60_000
      assert wait_until(fn -> processes_with(marker) != [] end)
      helpers = processes_with(marker)
      :ok = Tether.kill(vm, :sigkill)
      assert_receive {:DOWN, ^vm, :process, _, {:signal, :sigkill, false}}, 5000
      left = wait_gone(helpers, 1000)
      # On failure, what is left and where: the group and cgroup the watchdog had to reach.
      assert left == [], survivors(left)
    end
  end
end
