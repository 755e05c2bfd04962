defmodule Tether.Spec do
  @moduledoc false
  # A run, validated: what `Tether.Options.validate/3` builds and the NIF decodes
  # (`native/tether_nif/src/spec.rs` reads it as this struct, every native field as given, with
  # no defaults of its own). The defaults of every field are written here, and only here; the
  # two that come from `config :tether` (`:kill_timeout` in `stop`, `:pipe_size`) are read by
  # `new/1`.
  #
  # The last fields are the BEAM side's (the NIF does not read them): output handlers run by the
  # `Tether.Process`, who gets the `:DOWN` from it, `:link`, `:sync` with its `:timeout`, and the
  # `:node` the process runs on.

  @typedoc "The OS side of an output stream, and where piped data goes."
  @type output ::
          :null
          | :close
          | :other
          | :inherit
          | {:pipe, pid | :process}
          | {:file, binary, boolean, 0..0o777}

  @typedoc "One step of the stop sequence, with the wait (ms) before the next."
  @type stop_step :: {:signal, 0..64, non_neg_integer} | {:command, binary, non_neg_integer}

  @type t :: %__MODULE__{
          argv: [binary, ...],
          executable: binary | nil,
          env: [{binary, binary | nil} | :clear],
          cd: binary | nil,
          stdin: :null | :pipe | :close | {:file, binary},
          stdout: output,
          stderr: output,
          pty: {1..65_535, 1..65_535, boolean} | nil,
          group: :new | :inherit | pos_integer,
          kill_group: boolean,
          stop: [stop_step, ...],
          detach: boolean,
          nice: -20..19 | nil,
          user: binary | nil,
          capabilities: :all | non_neg_integer | nil,
          rlimits: [{binary, non_neg_integer, non_neg_integer}],
          idle_timeout_ms: pos_integer | nil,
          max_output: pos_integer | nil,
          monitor: pid | nil,
          success_exit_code: 0..255,
          pipe_size: non_neg_integer,
          stdout_credit: non_neg_integer | nil,
          stderr_credit: non_neg_integer | nil,
          keep_background: boolean,
          background_owner: pid | nil,
          cgroup_limits: [{binary, binary}],
          # The BEAM side's.
          handlers: %{optional(:stdout | :stderr) => (atom, pos_integer, binary -> any)},
          down_to: pid | nil,
          link: boolean,
          sync: boolean,
          timeout: timeout,
          node: node
        }

  @enforce_keys [:argv, :stop, :pipe_size]
  defstruct [
    :argv,
    :stop,
    :pipe_size,
    executable: nil,
    env: [],
    cd: nil,
    stdin: :null,
    stdout: :null,
    stderr: :null,
    pty: nil,
    group: :new,
    kill_group: true,
    detach: false,
    nice: nil,
    user: nil,
    capabilities: nil,
    rlimits: [],
    idle_timeout_ms: nil,
    max_output: nil,
    monitor: nil,
    success_exit_code: 0,
    stdout_credit: nil,
    stderr_credit: nil,
    keep_background: false,
    background_owner: nil,
    cgroup_limits: [],
    handlers: %{},
    down_to: nil,
    link: false,
    sync: false,
    timeout: :infinity,
    node: nil
  ]

  @doc false
  # The defaults for `argv`, with those of `config :tether`.
  @spec new([binary, ...]) :: t
  def new(argv) do
    %__MODULE__{
      argv: argv,
      stop: stop(:signal, 15, kill_timeout_ms()),
      pipe_size: Tether.Config.get(:pipe_size),
      node: node()
    }
  end

  @doc false
  # The default `:kill_timeout`, in ms.
  @spec kill_timeout_ms() :: non_neg_integer
  def kill_timeout_ms, do: round(Tether.Config.get(:kill_timeout) * 1000)

  @doc false
  # A stop that runs one action (a signal or a command), waits `wait_ms`, then SIGKILLs.
  @spec stop(:signal | :command, 0..64 | binary, non_neg_integer) :: [stop_step, ...]
  def stop(kind, what, wait_ms), do: [{kind, what, wait_ms}, {:signal, 9, 0}]
end
