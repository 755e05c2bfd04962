defmodule Tether.PathDependencyTest do
  # Builds a separate mix project that depends on Tether by `path:`: the NIF must be built in
  # the consumer's own _build and load there. Slow (a cargo build from scratch), so not async.
  use ExUnit.Case, async: false

  @moduletag :tmp_dir
  @moduletag timeout: 300_000

  test "a project using Tether as a path dependency compiles and runs it", %{tmp_dir: dir} do
    tether = File.cwd!()

    File.write!(Path.join(dir, "mix.exs"), """
    defmodule Consumer.MixProject do
      use Mix.Project
      def project, do: [app: :consumer, version: "0.0.1", deps: [{:tether, path: #{inspect(tether)}}]]
      def application, do: [extra_applications: [:logger, :erlexec]]
    end
    """)

    # An erlexec project's configuration: read by the :erlexec application Tether provides.
    {me, 0} = System.cmd("id", ["-un"])
    me = String.trim(me)
    File.mkdir_p!(Path.join(dir, "config"))

    File.write!(Path.join(dir, "config/config.exs"), """
    import Config
    config :erlexec, root: true, user: #{inspect(me)}, limit_users: [#{inspect(me)}]
    """)

    code = """
    {:ok, _, os_pid} = Tether.run(["echo", "from consumer"], [:stdout, :monitor])
    receive do {:stdout, ^os_pid, data} -> IO.write(data) end
    receive do {:DOWN, ^os_pid, :process, _, reason} -> IO.inspect(reason) end
    IO.puts(:code.priv_dir(:tether))
    [{:exec, exec, :worker, _}] = Supervisor.which_children(:exec_app)
    true = Process.whereis(:exec) == exec
    IO.inspect(:exec.run(~c"id -un", [:sync, :stdout, {:user, #{inspect(me)}}]))
    IO.inspect(:exec.run(~c"true", [:sync, {:user, ~c"daemon"}]))
    """

    env = [{"MIX_ENV", "dev"}, {"MIX_EXS", nil}, {"MIX_BUILD_PATH", nil}, {"MIX_DEPS_PATH", nil}]

    {output, status} =
      System.cmd("mix", ["run", "-e", code], cd: dir, env: env, stderr_to_stdout: true)

    assert status == 0, output
    assert output =~ "from consumer\n:normal\n"
    # The :erlexec application started the exec server with `config :erlexec`.
    assert output =~ ~s({:ok, [stdout: ["#{me}\\n"]]})
    assert output =~ ~s({:error, 'User daemon is not allowed to run commands!'})
    # Built by cargo inside the consumer's own _build.
    assert File.exists?(Path.join(dir, "_build/dev/tether_native/release/libtether_nif.so"))
  end
end
