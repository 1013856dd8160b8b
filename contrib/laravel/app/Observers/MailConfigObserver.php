<?php
// A Laravel model observer: after an account, alias or domain is saved or
// deleted, and after the transaction around it has committed, ask mapsyncd
// to sync and wait until Postfix and Dovecot have the change.

namespace App\Observers;

use Illuminate\Database\Eloquent\Model;
use Illuminate\Support\Facades\Log;
use Mapsyncd\Client;
use Mapsyncd\Exception as MapsyncdException;

class MailConfigObserver
{
    // Run after the database transaction commits: a sync started before
    // the commit would not see it.
    public bool $afterCommit = true;

    public function __construct(private Client $mapsyncd)
    {
    }

    public function saved(Model $model): void
    {
        $this->live($model);
    }

    public function deleted(Model $model): void
    {
        $this->live($model);
    }

    private function live(Model $model): void
    {
        try {
            $answer = $this->mapsyncd->sync();
            Log::info('mail maps live', ['model' => $model::class, 'id' => $model->getKey(),
                                         'generation' => $answer['generation']]);
        } catch (MapsyncdException $e) {
            // The change is saved; mapsyncd retries on its own. Tell the
            // admin it is not live yet.
            Log::warning('mail maps not live yet: ' . $e->getMessage());
            session()->flash('warning', 'Saved; the mail server has not taken the change yet.');
        }
    }
}
