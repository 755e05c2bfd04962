defmodule Mix.Tasks.Compile.TetherNative do
  @moduledoc """
  Builds the Rust NIF with cargo and installs it as `priv/native/libtether_nif.so`.

  Lives in `mix.exs` because Tether has no hex dependencies (no `rustler` package). It runs
  before the Elixir compiler so that `@on_load` never loads a stale library. Cargo's target
  directory is under `Mix.Project.build_path/0`, so a project that uses Tether as a `path:` or
  `git:` dependency builds it in its own `_build`. The library is installed in the app's
  `priv/native` inside `_build`: the repository has no `priv/` of its own, so Mix makes that a
  real directory per build rather than a symlink into the shared source tree.
  """
  use Mix.Task.Compiler

  # The NIF and the programs it starts (watchdog, spawner), built by one cargo call.
  @packages ["tether_nif", "tether_watchdog", "tether_spawner"]
  @artifacts ["libtether_nif.so", "tether_watchdog", "tether_spawner"]

  @impl true
  def run(_args) do
    root = Path.expand(Path.dirname(__ENV__.file))
    installed = Path.join([Mix.Project.app_path(), "priv", "native"])

    if stale?(root, installed) do
      build(root, installed)
    else
      {:noop, []}
    end
  end

  defp stale?(root, installed) do
    sources =
      Path.wildcard(Path.join(root, "native/**/*.{rs,toml}")) ++
        Enum.filter(
          [Path.join(root, "Cargo.toml"), Path.join(root, "Cargo.lock")],
          &File.exists?/1
        )

    Enum.any?(@artifacts, fn artifact ->
      case File.stat(Path.join(installed, artifact), time: :posix) do
        {:ok, %{mtime: built}} ->
          Enum.any?(sources, &(File.stat!(&1, time: :posix).mtime > built))

        {:error, _} ->
          true
      end
    end)
  end

  defp build(root, installed) do
    cargo = System.find_executable("cargo") || Mix.raise(no_cargo())
    target_dir = Path.join(Mix.Project.build_path(), "tether_native")

    profile =
      if Mix.env() == :prod, do: "release", else: System.get_env("TETHER_PROFILE", "release")

    # -p marks each package as primary, which rustler needs to emit the nif_init symbol.
    args =
      ["build", "--manifest-path", Path.join(root, "Cargo.toml"), "--target-dir", target_dir] ++
        Enum.flat_map(@packages, &["-p", &1]) ++
        if(profile == "release", do: ["--release"], else: [])

    Mix.shell().info("Compiling the Tether NIF (cargo #{profile})")

    case System.cmd(cargo, args, cd: root, stderr_to_stdout: true, into: IO.stream()) do
      {_, 0} ->
        Enum.each(
          @artifacts,
          &install(Path.join([target_dir, profile, &1]), Path.join(installed, &1))
        )

        install_static_spawner(cargo, root, target_dir, profile, installed)
        {:ok, []}

      {_, status} ->
        Mix.raise(
          "cargo build of #{Enum.join(@packages, ", ")} failed with exit status #{status}"
        )
    end
  end

  # The spawner's memory is folded into every child's max_rss at execve, and a dynamically
  # linked one maps ~1.4 MB of libc.so (more than /bin/true uses in all): linked statically it
  # stays near 1 MB. Best effort: without a static libc the dynamic one stays installed.
  defp install_static_spawner(cargo, root, target_dir, profile, installed) do
    with {host_info, 0} <- System.cmd("rustc", ["-vV"], stderr_to_stdout: true),
         [_, host] <- Regex.run(~r/^host: (\S+)$/m, host_info),
         args =
           ["build", "--manifest-path", Path.join(root, "Cargo.toml"), "--target-dir", target_dir] ++
             ["-p", "tether_spawner", "--target", host] ++
             if(profile == "release", do: ["--release"], else: []),
         env = [{"RUSTFLAGS", "-C target-feature=+crt-static"}],
         {_, 0} <- System.cmd(cargo, args, cd: root, env: env, stderr_to_stdout: true) do
      install(
        Path.join([target_dir, host, profile, "tether_spawner"]),
        Path.join(installed, "tether_spawner")
      )
    else
      _ -> Mix.shell().info("tether_spawner: no static build, the dynamic one is used")
    end
  end

  # Write-then-rename: never overwrite a .so that a running VM has mapped.
  defp install(built, installed) do
    File.mkdir_p!(Path.dirname(installed))
    tmp = installed <> ".tmp#{System.unique_integer([:positive])}"
    File.cp!(built, tmp)
    File.chmod!(tmp, File.stat!(built).mode)
    File.rename!(tmp, installed)
  end

  defp no_cargo do
    "cargo was not found on PATH. Tether builds its NIF with Rust (1.82 or newer): " <>
      "install it from https://rustup.rs and run the command again."
  end
end

defmodule Mix.Tasks.Compile.ErlexecApp do
  @moduledoc """
  Writes `erlexec.app` next to Tether's own `.app`, so that a project that lists `:erlexec` in
  its applications (or calls `Application.ensure_all_started(:erlexec)`) gets the `exec`
  server of Tether's erlexec-compatible `:exec` module, started by `Tether.Exec.App` with the
  options of `config :erlexec`. It is in Tether's `ebin`, so it is on the code path wherever
  Tether is, also as a `path:` or `git:` dependency.
  """
  use Mix.Task.Compiler

  @impl true
  def run(_args) do
    path = Path.join(Mix.Project.compile_path(), "erlexec.app")

    spec =
      {:application, :erlexec,
       [
         description: ~c"erlexec's application, served by Tether's :exec module",
         vsn: ~c"2.3.4",
         modules: [],
         registered: [:exec, :exec_app],
         applications: [:kernel, :stdlib, :tether],
         mod: {Tether.Exec.App, []},
         env: []
       ]}

    content = :io_lib.format(~c"~p.~n", [spec]) |> IO.iodata_to_binary()

    if File.read(path) == {:ok, content} do
      {:noop, []}
    else
      File.mkdir_p!(Path.dirname(path))
      File.write!(path, content)
      {:ok, []}
    end
  end
end

defmodule Tether.MixProject do
  use Mix.Project

  def project do
    [
      app: :tether,
      version: "0.1.0",
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      compilers: [:tether_native] ++ Mix.compilers() ++ [:erlexec_app],
      elixirc_paths: elixirc_paths(Mix.env()),
      erlc_paths: erlc_paths(Mix.env()),
      deps: [],
      # :inets (the health endpoint and checks of Tether.TestCluster) is started by
      # TestCluster when a cluster starts, so Tether's users do not all depend on it.
      xref: [exclude: [:httpc, :inets]],
      aliases: aliases(),
      docs: [main: "Tether"]
    ]
  end

  def application do
    [extra_applications: [:logger], mod: {Tether.Application, []}]
  end

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_), do: ["lib"]

  # The Erlang test module exercises `:exec` the way Erlang users call it.
  defp erlc_paths(:test), do: ["test/erlang"]
  defp erlc_paths(_), do: []

  defp aliases do
    [demo: "run examples/cluster.exs", tour: "run examples/tour.exs"]
  end
end
