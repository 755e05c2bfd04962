defmodule Tether.Signal do
  @moduledoc false
  # Signal names and numbers, on the BEAM side: the one Elixir table (erlexec's, with SIGUSR1
  # and SIGUSR2, which erlexec's lacks, and its `sigrtmin`/`sigrtmax`), and the checked
  # conversion of what callers give (`Tether.kill/2`, `:kill_sequence`, `:exec.kill/2`). Names
  # given by callers are resolved by the native core (case-insensitive, `:term` also works),
  # whose table names the signals of `:DOWN` reasons.

  @table [sighup: 1, sigint: 2, sigquit: 3, sigill: 4, sigtrap: 5, sigabrt: 6, sigbus: 7] ++
           [sigfpe: 8, sigkill: 9, sigusr1: 10, sigsegv: 11, sigusr2: 12, sigpipe: 13] ++
           [sigalrm: 14, sigterm: 15, sigstkflt: 16, sigchld: 17, sigcont: 18, sigstop: 19] ++
           [sigtstp: 20, sigttin: 21, sigttou: 22, sigurg: 23, sigxcpu: 24, sigxfsz: 25] ++
           [sigvtalrm: 26, sigprof: 27, sigwinch: 28, sigio: 29, sigpwr: 30, sigsys: 31] ++
           [sigrtmin: 34, sigrtmax: 64]

  @doc false
  # The table's name of `number`, or `number` itself when it has none.
  @spec name(integer) :: atom | integer
  for {name, number} <- @table, do: def(name(unquote(number)), do: unquote(name))
  def name(number) when is_integer(number), do: number

  @doc false
  # The table's number of `name`, `:error` for a name it lacks.
  @spec table_number(atom) :: {:ok, pos_integer} | :error
  for {name, number} <- @table, do: def(table_number(unquote(name)), do: {:ok, unquote(number)})
  def table_number(_name), do: :error

  @doc false
  # The number of a signal given by number (0..64) or name; ArgumentError for anything else.
  @spec number!(Tether.signal()) :: 0..64
  def number!(signal) when is_integer(signal) and signal in 0..64, do: signal

  def number!(signal) when is_atom(signal) and signal not in [nil, true, false] do
    Tether.Native.signal_number(Atom.to_string(signal)) || bad!(signal)
  end

  def number!(signal), do: bad!(signal)

  @doc false
  # Like number!/1, `:error` instead of raising.
  @spec number(term) :: {:ok, 0..64} | :error
  def number(signal) do
    {:ok, number!(signal)}
  rescue
    ArgumentError -> :error
  end

  defp bad!(signal) do
    raise ArgumentError,
          "invalid signal: #{inspect(signal)} (expected 0..64 or a name like :sigterm)"
  end
end
