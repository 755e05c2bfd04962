defmodule Tether.Exec.App do
  @moduledoc false
  # The `erlexec` application (its `erlexec.app` is written next to Tether's by the
  # `:erlexec_app` compiler in mix.exs): a supervisor with the `exec` server, started with the
  # options of `config :erlexec`, as erlexec's `exec_app` does. Lets projects list `:erlexec`
  # in `applications`/`extra_applications` or call `application:start(erlexec)` unchanged.
  use Application

  # erlexec's exec_app reads these keys of its application environment.
  @keys [:debug, :verbose, :root, :args, :alarm, :portexe, :user, :limit_users, :capabilities] ++
          [:env]

  @impl true
  def start(_type, _args) do
    options =
      for key <- @keys, {:ok, value} <- [:application.get_env(:erlexec, key)], do: {key, value}

    children = [
      %{id: :exec, start: {:exec, :start_link, [options]}, shutdown: 30_000, type: :worker}
    ]

    # erlexec's own limits: 3 restarts within 30 s.
    Supervisor.start_link(children,
      strategy: :one_for_one,
      max_restarts: 3,
      max_seconds: 30,
      name: :exec_app
    )
  end
end
