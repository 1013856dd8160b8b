<?php
// Registers the client and the observer (add the provider to
// config/app.php, or bootstrap/providers.php in Laravel 11).

namespace App\Providers;

use App\Models\Alias;
use App\Models\Domain;
use App\Models\EmailAccount;
use App\Observers\MailConfigObserver;
use Illuminate\Support\ServiceProvider;
use Mapsyncd\Client;

class MapsyncdServiceProvider extends ServiceProvider
{
    public function register(): void
    {
        $this->app->singleton(Client::class, fn () => new Client(
            config('services.mapsyncd.socket', '/run/mapsyncd/api.sock'),
            (int) config('services.mapsyncd.timeout', 60),
        ));
    }

    public function boot(): void
    {
        EmailAccount::observe(MailConfigObserver::class);
        Alias::observe(MailConfigObserver::class);
        Domain::observe(MailConfigObserver::class);
    }
}
