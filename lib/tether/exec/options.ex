defmodule Tether.Exec.Options do
  @moduledoc false
  # Checks erlexec's commands and options the way erlexec does (same guards, same error terms)
  # and translates them into `Tether.run/2` arguments.
  #
  # Errors are erlexec 2.x's: `{:invalid_option, option}` for anything unknown or out of range,
  # `{:invalid_env_value, entries}`, `{:invalid_pty_value, entries}`, and erlexec's strings for
  # bad output redirections (`"Invalid stdout option ..."`).
  #
  # What the `:exec` layer handles itself comes back as flags: `:monitor`, `:link`, `:sync`,
  # `:kill_group`, `:group`, `:success_exit_code`, `:user`, `:capabilities` (the server narrows
  # them to what it may give, see `:exec.start/1`) and the terminal modes of `{pty, Opts}` that
  # Tether has no option for (`:termios`).

  @typedoc "What `translate/2` returns besides the Tether options."
  @type flags :: %{
          monitor: boolean,
          link: boolean,
          sync: boolean,
          kill_group: boolean,
          group: non_neg_integer | nil,
          success_exit_code: 0..255,
          user: String.t() | nil,
          capabilities: :all | non_neg_integer | nil,
          pty: boolean,
          termios: [{atom, integer | boolean}]
        }

  @doc """
  The Tether command for an erlexec command: a string (charlist or binary) runs through
  `$SHELL -c` (`/bin/sh` when `SHELL` is unset or empty), as erlexec runs it; a list of strings
  runs directly.

      iex> Tether.Exec.Options.command([~c"ls", "-l"])
      {:ok, ["ls", "-l"]}
      iex> Tether.Exec.Options.command(:ls)
      {:error, {:invalid_command, :ls}}
  """
  @spec command(term) :: {:ok, [String.t()]} | {:error, {:invalid_command, term}}
  def command(command) when is_binary(command), do: {:ok, [shell(), "-c", command]}

  def command([first | _] = command) when is_integer(first) do
    case string(command) do
      {:ok, string} -> {:ok, [shell(), "-c", string]}
      :error -> {:error, {:invalid_command, command}}
    end
  end

  def command([_ | _] = command) do
    with true <- proper_list?(command),
         strings = Enum.map(command, &string/1),
         false <- Enum.member?(strings, :error) do
      {:ok, Enum.map(strings, fn {:ok, s} -> s end)}
    else
      _ -> {:error, {:invalid_command, command}}
    end
  end

  def command(other), do: {:error, {:invalid_command, other}}

  @doc "The shell of string commands: `$SHELL`, or `/bin/sh` when it is unset or empty."
  @spec shell() :: String.t()
  def shell do
    case System.get_env("SHELL") do
      shell when shell in [nil, ""] -> "/bin/sh"
      shell -> shell
    end
  end

  @doc """
  Checks erlexec run options for `caller` and returns `{:ok, tether_options, flags}`.

      iex> {:ok, opts, flags} = Tether.Exec.Options.translate([:monitor, {:env, [~c"A=1"]}, {:kill_timeout, 2}], self())
      iex> {opts, flags.monitor}
      {[env: [{"A", "1"}], kill_timeout: 2], true}
      iex> Tether.Exec.Options.translate([:bogus], self())
      {:error, {:invalid_option, :bogus}}
  """
  @spec translate(term, pid) :: {:ok, keyword, flags} | {:error, term}
  def translate(options, caller) do
    if is_list(options) and proper_list?(options) do
      flags = %{
        monitor: false,
        link: false,
        sync: false,
        kill_group: false,
        group: nil,
        success_exit_code: 0,
        user: nil,
        capabilities: nil,
        pty: false,
        termios: []
      }

      Enum.reduce_while(options, {:ok, [], flags}, fn option, {:ok, acc, flags} ->
        case option(option, caller, flags) do
          {:flags, flags} -> {:cont, {:ok, acc, flags}}
          {:tether, tether, flags} -> {:cont, {:ok, acc ++ List.wrap(tether), flags}}
          {:error, _} = error -> {:halt, error}
        end
      end)
    else
      {:error, {:invalid_option, options}}
    end
  end

  defp option(flag, _caller, flags) when flag in [:monitor, :link, :sync],
    do: {:flags, Map.put(flags, flag, true)}

  defp option(:kill_group, _caller, flags), do: {:flags, %{flags | kill_group: true}}
  defp option(:debug, _caller, flags), do: {:flags, flags}
  defp option({:debug, n}, _caller, flags) when n in 0..10, do: {:flags, flags}

  defp option({key, value} = option, _caller, flags) when key in [:executable, :cd, :kill] do
    case string(value) do
      {:ok, string} -> {:tether, {key, string}, flags}
      :error -> invalid(option)
    end
  end

  defp option({:env, env} = option, _caller, flags) when is_list(env) do
    if proper_list?(env) do
      case Enum.reject(env, &env_entry?/1) do
        [] -> {:tether, {:env, Enum.map(env, &env_entry/1)}, flags}
        bad -> {:error, {:invalid_env_value, bad}}
      end
    else
      invalid(option)
    end
  end

  defp option({:kill_timeout, seconds}, _caller, flags)
       when is_integer(seconds) and seconds >= 0 and seconds <= 4_294_967,
       do: {:tether, {:kill_timeout, seconds}, flags}

  # erlexec allows 20; the kernel's lowest priority is 19.
  defp option({:nice, n}, _caller, flags) when n in -20..20,
    do: {:tether, {:nice, min(n, 19)}, flags}

  defp option({:success_exit_code, code}, _caller, flags) when code in 0..255,
    do: {:flags, %{flags | success_exit_code: code}}

  defp option(:stdin, _caller, flags), do: {:tether, :stdin, flags}

  defp option(stream, caller, flags) when stream in [:stdout, :stderr],
    do: {:tether, {stream, caller}, flags}

  defp option(:pty, _caller, flags), do: {:tether, :pty, %{flags | pty: true}}
  defp option(:pty_echo, _caller, flags), do: {:tether, :pty_echo, flags}

  defp option({:winsz, {rows, cols}} = option, _caller, flags)
       when is_integer(rows) and rows >= 0 and is_integer(cols) and cols >= 0 do
    cond do
      rows in 1..65_535 and cols in 1..65_535 -> {:tether, {:winsz, {rows, cols}}, flags}
      # erlexec takes a 0 (its port program's ioctl result is not checked): the terminal keeps
      # its size.
      rows == 0 or cols == 0 -> {:flags, flags}
      true -> invalid(option)
    end
  end

  defp option({:pty, modes}, _caller, flags) when is_list(modes) do
    with :ok <- check_pty_opts(modes) do
      # Echo is Tether's own option; the other modes are set on the terminal after the spawn.
      {echo, others} = Enum.split_with(modes, fn {key, _} -> key == :echo end)

      echo =
        case List.last(echo) do
          nil -> []
          {:echo, value} -> [pty_echo: value in [true, 1]]
        end

      {:tether, [:pty | echo], %{flags | pty: true, termios: flags.termios ++ others}}
    end
  end

  defp option({:capabilities, :all}, _caller, flags),
    do: {:flags, %{flags | capabilities: :all}}

  # erlexec's port program takes [] as no capabilities asked for.
  defp option({:capabilities, caps} = option, _caller, flags) when is_list(caps) do
    case Tether.Options.capability_mask(caps) do
      {:ok, 0} -> {:flags, %{flags | capabilities: nil}}
      {:ok, mask} -> {:flags, %{flags | capabilities: mask}}
      :error -> invalid(option)
    end
  end

  defp option({:stdin, source}, _caller, flags) when source in [:null, :close],
    do: {:tether, {:stdin, source}, flags}

  defp option({:stdin, file} = option, _caller, flags) when is_list(file) or is_binary(file) do
    case string(file) do
      {:ok, path} when path != "" -> {:tether, {:stdin, path}, flags}
      _ -> invalid(option)
    end
  end

  defp option({stream, file, file_options}, _caller, flags)
       when stream in [:stdout, :stderr] and is_list(file_options) do
    with {:ok, path} <- file_name(stream, file),
         :ok <- file_options(stream, file_options) do
      {:tether, {stream, {path, file_options}}, flags}
    end
  end

  defp option({stream, device}, caller, flags)
       when stream in [:stdout, :stderr] and device != stream do
    case device(stream, device, caller) do
      {:ok, destination} -> {:tether, {stream, destination}, flags}
      {:error, _} = error -> error
    end
  end

  defp option({:group, gid}, _caller, flags) when is_integer(gid) and gid >= 0 do
    if gid < 2_147_483_648,
      do: {:tether, {:group, gid}, %{flags | group: gid}},
      else: invalid({:group, gid})
  end

  defp option({:user, user} = option, _caller, flags)
       when (is_list(user) and user != []) or (is_binary(user) and user != "") or
              (is_atom(user) and user not in [nil, true, false]) do
    case string(user) do
      {:ok, name} -> {:flags, %{flags | user: name}}
      :error -> invalid(option)
    end
  end

  defp option(other, _caller, _flags), do: invalid(other)

  defp invalid(option), do: {:error, {:invalid_option, option}}

  # ── Output ───────────────────────────────────────────────────────────────────────────────

  defp device(_stream, device, _caller) when device in [:null, :close, :stdout, :stderr],
    do: {:ok, device}

  defp device(_stream, :print, _caller), do: {:ok, &print/3}
  defp device(_stream, pid, _caller) when is_pid(pid), do: {:ok, pid}
  # Not erlexec's, kept for code written against earlier versions of this layer.
  defp device(_stream, {:send, pid}, _caller) when is_pid(pid), do: {:ok, pid}
  defp device(_stream, fun, _caller) when is_function(fun, 3), do: {:ok, fun}

  defp device(stream, fun, _caller) when is_function(fun) do
    {:error, "Invalid #{stream} option #{inspect_erl(fun)}: expected Fun/3"}
  end

  defp device(stream, file, _caller) when is_list(file) or is_binary(file) do
    case string(file) do
      {:ok, path} when path != "" -> {:ok, path}
      _ -> {:error, "Invalid #{stream} option #{inspect_erl(file)}"}
    end
  end

  defp device(stream, other, _caller),
    do: {:error, "Invalid #{stream} option #{inspect_erl(other)}"}

  defp file_name(stream, file) do
    case string(file) do
      {:ok, path} when path != "" -> {:ok, path}
      _ -> {:error, "Invalid #{stream} filename: #{inspect_erl(file)}"}
    end
  end

  defp file_options(stream, options) do
    if proper_list?(options),
      do: file_option_entries(stream, options),
      else: {:error, "Invalid #{stream} option: #{inspect_erl(options)}"}
  end

  defp file_option_entries(stream, options) do
    case Enum.find(
           options,
           &(not match?(:append, &1) and not match?({:mode, m} when is_integer(m), &1))
         ) do
      nil ->
        :ok

      bad ->
        {:error, "Invalid #{stream} option: #{inspect_erl(bad)}"}
    end
  end

  @doc false
  # erlexec's `print` device.
  def print(stream, os_pid, data),
    do: :io.format(~c"Got ~w from ~w: ~p\n", [stream, os_pid, data])

  defp inspect_erl(term), do: :io_lib.format(~c"~200p", [term]) |> IO.chardata_to_string()

  # ── Environment ──────────────────────────────────────────────────────────────────────────

  defp env_entry?(:clear), do: true
  defp env_entry?({name, false}), do: is_list(name) or is_binary(name)

  defp env_entry?({name, value}),
    do: (is_list(name) or is_binary(name)) and (is_list(value) or is_binary(value))

  defp env_entry?(entry), do: is_list(entry) or is_binary(entry)

  defp env_entry(:clear), do: :clear
  defp env_entry({name, false}), do: {to_string!(name), false}
  defp env_entry({name, value}), do: {to_string!(name), to_string!(value)}

  defp env_entry(entry) do
    case String.split(to_string!(entry), "=", parts: 2) do
      [name, value] -> {name, value}
      # erlexec passes "NAME" through to the environment as is; without a value it means empty.
      [name] -> {name, ""}
    end
  end

  defp to_string!(value) do
    case string(value) do
      {:ok, string} -> string
      :error -> raise ArgumentError, "invalid string in :env option: #{inspect(value)}"
    end
  end

  # ── Terminals ────────────────────────────────────────────────────────────────────────────

  @tty_chars ~w(vintr vquit verase vkill veof veol veol2 vstart vstop vsusp vdsusp vreprint
                vwerase vlnext vflush vswtch vstatus vdiscard)a
  @tty_modes ~w(ignpar parmrk inpck istrip inlcr igncr icrnl xcase iuclc ixon ixany ixoff
                imaxbel iutf8 isig icanon echo echoe echok echonl noflsh tostop iexten echoctl
                echoke pendin opost olcuc onlcr ocrnl onocr onlret cs7 cs8 parenb parodd)a
  @tty_speeds [:tty_op_ispeed, :tty_op_ospeed]

  @doc """
  Checks pty options as erlexec does: `:ok`, or `{:error, {:invalid_pty_value, bad}}` with the
  bad entries in order.

      iex> Tether.Exec.Options.check_pty_opts([echo: true, vintr: 2])
      :ok
      iex> Tether.Exec.Options.check_pty_opts([echo: true, vintr: false, invalid: 1])
      {:error, {:invalid_pty_value, [vintr: false, invalid: 1]}}
  """
  @spec check_pty_opts(term) :: :ok | {:error, {:invalid_pty_value, term}}
  def check_pty_opts(options) when is_list(options) do
    if proper_list?(options) do
      case Enum.reject(options, &pty_opt?/1) do
        [] -> :ok
        bad -> {:error, {:invalid_pty_value, bad}}
      end
    else
      {:error, {:invalid_pty_value, options}}
    end
  end

  def check_pty_opts(other), do: {:error, {:invalid_pty_value, other}}

  defp pty_opt?({key, value}) when is_atom(key) and (is_integer(value) or is_boolean(value)) do
    cond do
      key in @tty_chars -> is_integer(value) and value in 0..255
      key in @tty_modes -> is_boolean(value) or value in [0, 1]
      key in @tty_speeds -> is_integer(value) and value >= 0
      true -> false
    end
  end

  defp pty_opt?(_), do: false

  @stty_chars %{
    vintr: "intr",
    vquit: "quit",
    verase: "erase",
    vkill: "kill",
    veof: "eof",
    veol: "eol",
    veol2: "eol2",
    vstart: "start",
    vstop: "stop",
    vsusp: "susp",
    vreprint: "rprnt",
    vwerase: "werase",
    vlnext: "lnext",
    vdiscard: "discard"
  }

  @doc """
  `stty` arguments for checked pty options. Characters and modes Linux has no termios field
  for (`vdsusp`, `vflush`, `vswtch`, `vstatus`; clearing `cs7`/`cs8`) are skipped, as erlexec's
  port program skips them where the platform lacks them.

      iex> Tether.Exec.Options.stty_args([vintr: 2, echo: false, icanon: 1, tty_op_ospeed: 9600])
      ["intr", "0x02", "-echo", "icanon", "ospeed", "9600"]
  """
  @spec stty_args([{atom, integer | boolean}]) :: [String.t()]
  def stty_args(options) do
    Enum.flat_map(options, fn
      {key, 0} when is_map_key(@stty_chars, key) ->
        [@stty_chars[key], "undef"]

      {key, byte} when is_map_key(@stty_chars, key) ->
        [@stty_chars[key], hex(byte)]

      {key, _} when key in @tty_chars ->
        []

      {key, on} when key in [:cs7, :cs8] ->
        if on in [true, 1], do: [Atom.to_string(key)], else: []

      {key, on} when key in @tty_modes ->
        [if(on in [true, 1], do: "", else: "-") <> Atom.to_string(key)]

      {:tty_op_ispeed, speed} ->
        ["ispeed", Integer.to_string(speed)]

      {:tty_op_ospeed, speed} ->
        ["ospeed", Integer.to_string(speed)]
    end)
  end

  defp hex(byte), do: "0x" <> String.pad_leading(Integer.to_string(byte, 16), 2, "0")

  # ── Start options ────────────────────────────────────────────────────────────────────────

  @doc """
  Checks the options of `:exec.start/1` as erlexec does, with its error strings, and returns
  them as a map. `root` needs `{user, U}` and `{limit_users, L}`; without `root`, neither may
  be given.

      iex> Tether.Exec.Options.start_options([{:limit_users, [~c"yyyy"]}])
      {:error, ~c"Cannot restrict users {limit_users,Users} in non-root mode!"}
  """
  @spec start_options(term) :: {:ok, map} | {:error, term}
  def start_options(options) when is_list(options) do
    with true <- proper_list?(options) || {:error, {:invalid_option, options}},
         {:ok, parsed} <- parse_start(options) do
      check_start(parsed)
    end
  end

  def start_options(options), do: {:error, {:invalid_option, options}}

  defp parse_start(options) do
    base = %{
      root: false,
      user: nil,
      limit_users: [],
      env: [],
      debug: 0,
      verbose: false,
      capabilities: nil
    }

    Enum.reduce_while(options, {:ok, base}, fn option, {:ok, acc} ->
      case start_option(option, acc) do
        {:ok, acc} -> {:cont, {:ok, acc}}
        :error -> {:halt, {:error, {:invalid_option, option}}}
      end
    end)
  end

  defp start_option(:debug, acc), do: {:ok, %{acc | debug: 1}}
  defp start_option({:debug, n}, acc) when is_integer(n) and n >= 0, do: {:ok, %{acc | debug: n}}
  defp start_option(:verbose, acc), do: {:ok, %{acc | verbose: true}}

  defp start_option({:verbose, flag}, acc) when is_boolean(flag),
    do: {:ok, %{acc | verbose: flag}}

  defp start_option(:root, acc), do: {:ok, %{acc | root: true}}
  defp start_option({:root, flag}, acc) when is_boolean(flag), do: {:ok, %{acc | root: flag}}

  defp start_option({:user, user}, acc) when is_list(user) or is_binary(user) or is_atom(user) do
    case user do
      empty when empty in ["", [], nil] -> {:ok, %{acc | user: nil}}
      _ -> with {:ok, name} <- string(user), do: {:ok, %{acc | user: name}}
    end
  end

  defp start_option({:limit_users, users}, acc) when is_list(users) do
    names = if proper_list?(users), do: Enum.map(users, &string/1), else: [:error]

    if :error in names,
      do: :error,
      else: {:ok, %{acc | limit_users: Enum.map(names, &elem(&1, 1))}}
  end

  defp start_option({:env, env}, acc) when is_list(env) do
    if proper_list?(env) and Enum.all?(env, &env_entry?/1),
      do: {:ok, %{acc | env: Enum.map(env, &env_entry/1)}},
      else: :error
  end

  # The most the server's children may hold: nil for no limit (`all`, and erlexec's [], its
  # port program's default).
  defp start_option({:capabilities, :all}, acc), do: {:ok, %{acc | capabilities: nil}}

  defp start_option({:capabilities, caps}, acc) when is_list(caps) do
    case Tether.Options.capability_mask(caps) do
      {:ok, 0} -> {:ok, %{acc | capabilities: nil}}
      {:ok, mask} -> {:ok, %{acc | capabilities: mask}}
      :error -> :error
    end
  end

  # The port program's own settings: there is no port program, so they mean nothing here.
  defp start_option({key, value}, acc)
       when key in [:args, :portexe, :valgrind] and (is_list(value) or is_binary(value)),
       do: {:ok, acc}

  defp start_option(:valgrind, acc), do: {:ok, acc}
  defp start_option({:alarm, secs}, acc) when is_integer(secs) and secs >= 0, do: {:ok, acc}
  defp start_option(_other, _acc), do: :error

  defp check_start(%{root: true, user: nil}),
    do: {:error, ~c"Not allowed to run without providing effective user {user,User}!"}

  defp check_start(%{root: true, limit_users: []}),
    do: {:error, ~c"Not allowed to run without restricting effective users {limit_users,Users}!"}

  defp check_start(%{root: false, user: user}) when user != nil,
    do: {:error, ~c"Cannot specify effective user {user,User} in non-root mode!"}

  defp check_start(%{root: false, limit_users: [_ | _]}),
    do: {:error, ~c"Cannot restrict users {limit_users,Users} in non-root mode!"}

  defp check_start(options), do: {:ok, options}

  # ── Helpers ──────────────────────────────────────────────────────────────────────────────

  defp string(value) when is_binary(value), do: {:ok, value}

  defp string(value) when is_atom(value) and value not in [nil, true, false],
    do: {:ok, Atom.to_string(value)}

  defp string(value) when is_list(value) do
    case :unicode.characters_to_binary(value) do
      binary when is_binary(binary) -> {:ok, binary}
      _ -> :error
    end
  rescue
    ArgumentError -> :error
  end

  defp string(_), do: :error

  defp proper_list?([]), do: true
  defp proper_list?([_ | tail]), do: proper_list?(tail)
  defp proper_list?(_), do: false
end
