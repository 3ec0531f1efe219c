package giteatest

import (
	"os"
	"path/filepath"
	"text/template"
)

// appIni is the whole Gitea configuration: loopback only, sqlite, nothing
// that reaches the internet, nothing periodic, and every path inside the
// server's temp dir. Secrets are set so that Gitea never rewrites the file.
var appIni = template.Must(template.New("app.ini").Parse(`; written by giteatest
APP_NAME = giteatest
RUN_MODE = prod
RUN_USER =
WORK_PATH = {{.Dir}}
I_AM_BEING_UNSAFE_RUNNING_AS_ROOT = true

[server]
PROTOCOL = http
HTTP_ADDR = 127.0.0.1
HTTP_PORT = {{.Port}}
DOMAIN = 127.0.0.1
ROOT_URL = http://127.0.0.1:{{.Port}}/
APP_DATA_PATH = {{.Dir}}/data
; a non-bindata build reads templates/ options/ public/ from here
STATIC_ROOT_PATH = {{.Static}}
DISABLE_SSH = true
START_SSH_SERVER = false
OFFLINE_MODE = true
LFS_START_SERVER = false

[database]
DB_TYPE = sqlite3
PATH = {{.Dir}}/data/gitea.db
SQLITE_JOURNAL_MODE = WAL

[security]
INSTALL_LOCK = true
SECRET_KEY = {{.SecretKey}}
INTERNAL_TOKEN = {{.InternalToken}}
PASSWORD_COMPLEXITY = off
MIN_PASSWORD_LENGTH = 8

[oauth2]
JWT_SECRET = {{.JWTSecret}}

[service]
DISABLE_REGISTRATION = true
REQUIRE_SIGNIN_VIEW = false
DEFAULT_KEEP_EMAIL_PRIVATE = true

[repository]
ROOT = {{.Dir}}/repos
DEFAULT_BRANCH = main

[indexer]
ISSUE_INDEXER_TYPE = db
REPO_INDEXER_ENABLED = false

[session]
PROVIDER = memory

[cache]
ADAPTER = memory

[queue]
TYPE = channel

[cron]
ENABLED = false

[mailer]
ENABLED = false

[actions]
ENABLED = false

[webhook]
; the receivers in tests listen on 127.0.0.1; Gitea refuses those by default
ALLOWED_HOST_LIST = loopback
SKIP_TLS_VERIFY = true
DELIVER_TIMEOUT = 5

[log]
MODE = file
LEVEL = Warn
ROOT_PATH = {{.Dir}}/log
`))

// writeConfig writes app.ini for the current port.
func (s *Server) writeConfig() error {
	if err := os.MkdirAll(filepath.Dir(s.conf), 0o755); err != nil {
		return err
	}
	f, err := os.Create(s.conf)
	if err != nil {
		return err
	}
	err = appIni.Execute(f, map[string]any{
		"Dir": s.dir, "Port": s.port, "Static": s.static,
		"SecretKey": s.secrets.secretKey, "InternalToken": s.secrets.internalToken, "JWTSecret": s.secrets.jwtSecret,
	})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
