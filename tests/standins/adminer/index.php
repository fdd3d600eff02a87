<?php
/**
 * TEST INFRASTRUCTURE: front page of the local `adminer:4.8.1` stand-in (see ../README.md).
 *
 * Like the official image, pre-fills the login form's server field with
 * ADMINER_DEFAULT_SERVER (default "db") while the user has not typed another server.
 * Adminer 4.8.1's loginForm() calls $this->loginFormField($name, $heading, $value).
 */

function adminer_object()
{
    class StandinAdminer extends Adminer
    {
        public function loginFormField($name, $heading, $value)
        {
            if ($name === 'server') {
                $default = getenv('ADMINER_DEFAULT_SERVER');
                if ($default === false || $default === '') {
                    $default = 'db';
                }
                $value = str_replace(
                    'name="auth[server]" value=""',
                    'name="auth[server]" value="' . h($default) . '"',
                    $value
                );
            }
            return parent::loginFormField($name, $heading, $value);
        }
    }

    return new StandinAdminer();
}

require __DIR__ . '/adminer.php';
