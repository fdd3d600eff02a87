<?php
/**
 * Adminer for the AI Marketplace stack: a login reaches this stack's PostgreSQL and nothing
 * else. Both backends serve this file: compose mounts it over the adminer image's index.php,
 * the native backend serves it beside adminer.php with php -S.
 *
 * ADMINER_DEFAULT_SERVER names the stack's PostgreSQL (the compose service "postgres", or
 * 127.0.0.1:PORT natively). Whatever a login form or a URL says, the driver is PostgreSQL and
 * the server is that one: no login can reach another port (a Redis, whose reply a PostgreSQL
 * client waits on for ever) and hold up the server with it. PGCONNECT_TIMEOUT bounds a login.
 */

$stack_server = getenv('ADMINER_DEFAULT_SERVER') ?: 'postgres';

if (isset($_POST['auth']) && is_array($_POST['auth'])) {
    $_POST['auth']['driver'] = 'pgsql';
    $_POST['auth']['server'] = $stack_server;
}
// Adminer reads the driver from the name of a URL parameter and the server from its value.
foreach (array('server', 'sqlite', 'sqlite2', 'oracle', 'mssql', 'mongo', 'elastic',
               'clickhouse', 'firebird', 'simpledb') as $other_driver) {
    unset($_GET[$other_driver]);
}
if (isset($_GET['pgsql'])) {
    $_GET['pgsql'] = $stack_server;
}

function adminer_object()
{
    class StackAdminer extends Adminer
    {
        /** The login form shows PostgreSQL and the stack's server, pre-selected. */
        public function loginFormField($name, $heading, $value)
        {
            global $stack_server;
            if ($name === 'driver') {
                $value = str_replace(' selected', '', $value);
                $value = str_replace('value="pgsql"', 'value="pgsql" selected', $value);
            } elseif ($name === 'server') {
                $value = str_replace(
                    'name="auth[server]" value=""',
                    'name="auth[server]" value="' . h($stack_server) . '"',
                    $value
                );
            }
            return parent::loginFormField($name, $heading, $value);
        }
    }

    return new StackAdminer();
}

require __DIR__ . '/adminer.php';
